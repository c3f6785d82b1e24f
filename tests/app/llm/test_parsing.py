"""Reply parsing on literal bodies in the shapes the providers document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.llm import anthropic, openai_chat, openai_responses
from app.llm.errors import FatalError, RetryableError
from app.llm.types import ToolCall

OPENAI_CHAT_TOOL_CALLS: dict[str, Any] = json.loads(
    """
{
  "id": "chatcmpl-BbCdEfGh123",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {
              "name": "get_current_weather",
              "arguments": "{\\n\\"location\\": \\"Boston, MA\\"\\n}"
            }
          }
        ],
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {
      "reasoning_tokens": 0, "audio_tokens": 0,
      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_50cad350e4"
}
"""
)

DEEPSEEK_THINKING: dict[str, Any] = json.loads(
    """
{
  "id": "930c60df-bf64-41c9-a88e-3ec75f81e00e",
  "object": "chat.completion",
  "created": 1781234567,
  "model": "deepseek-v4-flash",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "",
        "reasoning_content": "The user wants the date; I should call the tool.",
        "tool_calls": [
          {
            "index": 0,
            "id": "call_00_TbbLsFDOQrVHDd2GYE5W3Jw4",
            "type": "function",
            "function": {"name": "get_date", "arguments": "{}"}
          }
        ]
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024},
    "completion_tokens_details": {"reasoning_tokens": 250},
    "prompt_cache_hit_tokens": 1024,
    "prompt_cache_miss_tokens": 176
  },
  "system_fingerprint": "fp_ffc7281d48_prod0820_fp8_kvcache"
}
"""
)

ANTHROPIC_THINKING_TOOL_USE: dict[str, Any] = json.loads(
    """
{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-5-5",
  "content": [
    {
      "type": "thinking",
      "thinking": "Let me analyze this step by step...",
      "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG"
    },
    {"type": "text", "text": "I'll check the current weather in San Francisco."},
    {
      "type": "tool_use",
      "id": "toolu_01A09q90qw90lq917835lq9",
      "name": "get_weather",
      "input": {"location": "San Francisco, CA", "unit": "celsius"}
    }
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 21,
    "cache_creation_input_tokens": 188086,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 188086, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 393,
    "service_tier": "standard"
  }
}
"""
)

RESPONSES_REASONING_CALL: dict[str, Any] = json.loads(
    """
{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "gpt-5.5-2026-08-07",
  "output": [
    {
      "type": "reasoning",
      "id": "rs_6820f383d7c08191846711c5df8233bc",
      "summary": [{"type": "summary_text", "text": "Need the weather for Paris."}],
      "encrypted_content": "gAAAAABoISQ24OyVRYbkYfukdP4n"
    },
    {
      "type": "function_call",
      "id": "fc_12345xyz",
      "call_id": "call_12345xyz",
      "name": "get_weather",
      "arguments": "{\\"location\\":\\"Paris, France\\"}",
      "status": "completed"
    }
  ],
  "parallel_tool_calls": true,
  "store": false,
  "usage": {
    "input_tokens": 328,
    "input_tokens_details": {"cached_tokens": 128},
    "output_tokens": 148,
    "output_tokens_details": {"reasoning_tokens": 128},
    "total_tokens": 476
  }
}
"""
)

RESPONSES_TEXT: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-5.5",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there.", "annotations": []}],
        }
    ],
    "usage": {"input_tokens": 10, "output_tokens": 3},
}


def test_openai_chat_tool_calls() -> None:
    turn = openai_chat.parse_response(OPENAI_CHAT_TOOL_CALLS, latency_s=0.5)
    assert turn.text == ""
    assert turn.stop_reason == "tool_use" and turn.raw_stop_reason == "tool_calls"
    assert turn.model == "gpt-4.1-2025-04-14"
    assert turn.tool_calls == [
        ToolCall(
            id="call_abc123",
            name="get_current_weather",
            arguments={"location": "Boston, MA"},
            raw_arguments='{\n"location": "Boston, MA"\n}',
        )
    ]
    assert (turn.usage.uncached_input, turn.usage.cache_read, turn.usage.output) == (18, 64, 17)
    assert turn.usage.cache_write == 0 and turn.latency_s == 0.5


def test_openai_chat_text_and_length() -> None:
    body = {
        "model": "gpt-4.1",
        "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    turn = openai_chat.parse_response(body)
    assert (turn.text, turn.stop_reason, turn.usage.uncached_input) == ("Hi", "max_tokens", 5)
    assert turn.provider is not None and turn.provider.reasoning_content is None


def test_deepseek_reasoning_and_cache_split() -> None:
    turn = openai_chat.parse_response(DEEPSEEK_THINKING)
    assert turn.reasoning == "The user wants the date; I should call the tool."
    assert turn.provider is not None
    assert turn.provider.protocol == "openai-chat"
    assert turn.provider.reasoning_content == turn.reasoning
    assert turn.tool_calls[0].arguments == {}
    usage = turn.usage
    assert (usage.uncached_input, usage.cache_read, usage.output, usage.reasoning) == (
        176,
        1024,
        300,
        250,
    )


def test_deepseek_interrupted_generation_is_retryable() -> None:
    body = {
        "model": "deepseek-v4-flash",
        "choices": [
            {"message": {"content": "partial"}, "finish_reason": "insufficient_system_resource"}
        ],
    }
    with pytest.raises(RetryableError):
        openai_chat.parse_response(body)


def test_chat_reply_without_choices_is_fatal() -> None:
    with pytest.raises(FatalError, match="no choices"):
        openai_chat.parse_response({"model": "x", "choices": []})


def test_anthropic_thinking_text_and_tool_use() -> None:
    turn = anthropic.parse_response(ANTHROPIC_THINKING_TOOL_USE)
    assert turn.text == "I'll check the current weather in San Francisco."
    assert turn.reasoning == "Let me analyze this step by step..."
    assert turn.stop_reason == "tool_use"
    [call] = turn.tool_calls
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.arguments == {"location": "San Francisco, CA", "unit": "celsius"}
    assert json.loads(call.raw_arguments) == call.arguments
    assert turn.provider is not None
    assert turn.provider.items == ANTHROPIC_THINKING_TOOL_USE["content"]
    usage = turn.usage
    assert (usage.uncached_input, usage.cache_write, usage.cache_read, usage.output) == (
        21,
        188086,
        0,
        393,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "end_turn"),
        ("pause_turn", "pause_turn"),
        ("refusal", "refusal"),
        ("something_new", "other"),
    ],
)
def test_anthropic_stop_reasons(raw: str, expected: str) -> None:
    body = {"model": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": raw}
    assert anthropic.parse_response(body).stop_reason == expected


def test_anthropic_non_object_input_is_a_tool_error() -> None:
    body = {
        "model": "m",
        "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": ["ls"]}],
        "stop_reason": "tool_use",
    }
    [call] = anthropic.parse_response(body).tool_calls
    assert call.arguments is None and call.error is not None
    assert "must be a JSON object, got an array" in call.error


def test_responses_reasoning_and_function_call() -> None:
    turn = openai_responses.parse_response(RESPONSES_REASONING_CALL)
    assert turn.model == "gpt-5.5-2026-08-07"
    assert turn.reasoning == "Need the weather for Paris."
    assert turn.stop_reason == "tool_use"
    [call] = turn.tool_calls
    assert (call.id, call.name, call.arguments) == (
        "call_12345xyz",
        "get_weather",
        {"location": "Paris, France"},
    )
    assert turn.provider is not None and turn.provider.items == RESPONSES_REASONING_CALL["output"]
    usage = turn.usage
    assert (usage.uncached_input, usage.cache_read, usage.output, usage.reasoning) == (
        200,
        128,
        148,
        128,
    )


def test_responses_text_and_incomplete() -> None:
    turn = openai_responses.parse_response(RESPONSES_TEXT)
    assert (turn.text, turn.stop_reason, turn.tool_calls) == ("Hello there.", "end_turn", [])
    incomplete = {
        **RESPONSES_TEXT,
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
    }
    assert openai_responses.parse_response(incomplete).stop_reason == "max_tokens"


def test_responses_failed_status_raises() -> None:
    failed = {
        "model": "m",
        "status": "failed",
        "error": {"code": "server_error", "message": "boom"},
    }
    with pytest.raises(RetryableError, match="boom"):
        openai_responses.parse_response(failed)


@pytest.mark.parametrize(
    ("raw", "arguments", "fragment"),
    [
        ('{"a": 1}', {"a": 1}, None),
        ("", {}, None),
        ('{"a": 1', None, "invalid JSON"),
        ("[1, 2]", None, "got an array"),
        ('"ls"', None, "got a string"),
        ("null", None, "got null"),
    ],
)
def test_tool_call_argument_parsing(
    raw: str, arguments: dict[str, Any] | None, fragment: str | None
) -> None:
    call = ToolCall.from_raw("c1", "bash", raw)
    assert call.arguments == arguments
    assert call.raw_arguments == raw
    if fragment is None:
        assert call.error is None
    else:
        assert call.error is not None and fragment in call.error and '"bash"' in call.error
