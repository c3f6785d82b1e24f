"""Request bodies built from a conversation, per wire protocol (pure)."""

from __future__ import annotations

from app.llm import anthropic, openai_chat, openai_responses
from app.llm.client import output_budget
from app.llm.config import ModelConfig
from app.llm.types import AssistantTurn, Conversation, ProviderState, ToolCall, ToolSpec
from app.llm.types import Protocol as WireProtocol

TOOLS = [
    ToolSpec(name="bash", description="Run.", parameters={"type": "object"}),
    ToolSpec(name="finish", description="Done.", parameters={"type": "object"}),
]


def config(protocol: WireProtocol, **extra: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "m",
            "protocol": protocol,
            "base_url": "https://example.test/",
            "model_id": "model-x",
            "api_key_env": "K",
            **extra,
        }
    )


def looped(turn: AssistantTurn) -> Conversation:
    convo = Conversation(system="sys").user("task")
    convo.assistant(turn)
    for call in turn.tool_calls:
        convo.tool_result(call.id, "out", is_error=call.error is not None)
    return convo


CALL = ToolCall(id="c1", name="bash", arguments={"command": "ls"}, raw_arguments='{"command":"ls"}')
BAD = ToolCall.from_raw("c2", "bash", '{"command"')


def test_config_defaults() -> None:
    cfg = config("openai-chat")
    assert cfg.price_key == "model-x"
    assert cfg.base_url == "https://example.test"
    assert config("anthropic", price_key="other").price_key == "other"
    assert output_budget(cfg, None) == 8192
    assert output_budget(cfg, 100_000) == 8192
    assert output_budget(cfg, 50) == 50


def test_chat_body() -> None:
    turn = AssistantTurn(text="", tool_calls=[CALL, BAD])
    body = openai_chat.build_request(
        config("openai-chat", extra_body={"temperature": 0}), looped(turn), TOOLS, 100
    )
    assert body["model"] == "model-x" and body["max_tokens"] == 100 and body["temperature"] == 0
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "bash", "description": "Run.", "parameters": {"type": "object"}},
    }
    system, user, assistant, r1, r2 = body["messages"]
    assert system == {"role": "system", "content": "sys"}
    assert user == {"role": "user", "content": "task"}
    assert assistant["content"] is None
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [
        '{"command":"ls"}',
        '{"command"',
    ]
    assert "reasoning_content" not in assistant
    assert r1 == {"role": "tool", "tool_call_id": "c1", "content": "out"}
    assert r2["content"] == "ERROR: out"


def test_chat_max_completion_tokens_field() -> None:
    cfg = config("openai-chat", max_tokens_field="max_completion_tokens")
    body = openai_chat.build_request(cfg, Conversation().user("x"), [], 10)
    assert body["max_completion_tokens"] == 10 and "max_tokens" not in body
    assert "tools" not in body
    assert body["messages"] == [{"role": "user", "content": "x"}]


def test_chat_reasoning_content_only_for_same_protocol() -> None:
    own = AssistantTurn(
        tool_calls=[CALL],
        provider=ProviderState(protocol="openai-chat", reasoning_content="why"),
    )
    body = openai_chat.build_request(config("openai-chat"), looped(own), [], 10)
    assert body["messages"][2]["reasoning_content"] == "why"
    foreign = own.model_copy(
        update={"provider": ProviderState(protocol="anthropic", items=[{"type": "thinking"}])}
    )
    body = openai_chat.build_request(config("openai-chat"), looped(foreign), [], 10)
    assert "reasoning_content" not in body["messages"][2]


def test_anthropic_body_blocks_and_cache_control() -> None:
    turn = AssistantTurn(text="Let me look.", tool_calls=[CALL, BAD])
    convo = looped(turn).user("and then?")
    body = anthropic.build_request(config("anthropic"), convo, TOOLS, 64)
    assert body["max_tokens"] == 64
    assert body["system"] == [
        {"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tools"] == [
        {"name": "bash", "description": "Run.", "input_schema": {"type": "object"}},
        {
            "name": "finish",
            "description": "Done.",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        },
    ]
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "task"}]}
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "c1", "name": "bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "c2", "name": "bash", "input": {}},
    ]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "out"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "out", "is_error": True},
        {"type": "text", "text": "and then?", "cache_control": {"type": "ephemeral"}},
    ]
    breakpoints = str(body).count("cache_control")
    assert breakpoints == 3


def test_anthropic_passes_back_own_blocks_unmodified() -> None:
    blocks = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
        {"type": "tool_use", "id": "c1", "name": "bash", "input": {"command": "ls"}},
    ]
    turn = AssistantTurn(
        tool_calls=[CALL], provider=ProviderState(protocol="anthropic", items=blocks)
    )
    body = anthropic.build_request(config("anthropic"), looped(turn), [], 64)
    assert body["messages"][1]["content"] == blocks
    assert body["messages"][1]["content"] is not blocks
    assert "system" in body and "tools" not in body


def test_anthropic_without_system() -> None:
    body = anthropic.build_request(config("anthropic"), Conversation().user("hi"), [], 5)
    assert "system" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
        }
    ]


def test_responses_body() -> None:
    items = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "bash", "arguments": "{}"},
    ]
    own = AssistantTurn(
        tool_calls=[CALL], provider=ProviderState(protocol="openai-responses", items=items)
    )
    body = openai_responses.build_request(config("openai-responses"), looped(own), TOOLS, 99)
    assert body["instructions"] == "sys"
    assert body["max_output_tokens"] == 99
    assert body["store"] is False
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["tools"][0] == {
        "type": "function",
        "name": "bash",
        "description": "Run.",
        "parameters": {"type": "object"},
        "strict": False,
    }
    assert body["input"] == [
        {"role": "user", "content": "task"},
        *items,
        {"type": "function_call_output", "call_id": "c1", "output": "out"},
    ]


def test_responses_rebuilds_foreign_turns() -> None:
    foreign = AssistantTurn(text="Looking.", tool_calls=[CALL])
    body = openai_responses.build_request(config("openai-responses"), looped(foreign), [], 9)
    assert body["input"][1:3] == [
        {"role": "assistant", "content": "Looking."},
        {"type": "function_call", "call_id": "c1", "name": "bash", "arguments": '{"command":"ls"}'},
    ]


def test_conversation_round_trips_through_json() -> None:
    turn = AssistantTurn(
        text="x",
        tool_calls=[CALL, BAD],
        provider=ProviderState(protocol="anthropic", items=[{"type": "text", "text": "x"}]),
    )
    convo = looped(turn)
    again = Conversation.model_validate_json(convo.model_dump_json())
    assert again == convo
