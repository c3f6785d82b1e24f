"""SSE framing and usage reading as the gateway does it, on frames as providers send them."""

from __future__ import annotations

import pytest

from app.llm.types import Usage
from runner.gateway_meter import Malformed, Meter, SseFrames, parse_frame


def test_frames_are_whole_however_the_bytes_arrive() -> None:
    stream = (
        b": keep-alive\n\n"
        b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
        b"data: line one\ndata: line two\n\n"
        b"data: [DONE]\n\n"
    )
    frames = SseFrames()
    got = [frame for i in range(len(stream)) for frame in frames.feed(stream[i : i + 1])]
    assert frames.rest == b""
    events = [parse_frame(f) for f in got]
    assert events[0] is None  # a comment
    assert events[1] is not None and events[1].event == "message_start"
    assert events[1].data == '{"a": 1}'
    assert events[2] is not None and events[2].data == "line one\nline two"
    assert events[3] is not None and events[3].data == "[DONE]"
    assert SseFrames().feed(b'data: {"cut"') == []


def test_anthropic_usage_is_message_start_updated_by_message_delta() -> None:
    meter = Meter("anthropic")
    for data in (
        '{"type": "message_start", "message": {"model": "claude-x", "usage": '
        '{"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}}',
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}',
        '{"type": "message_delta", "usage": {"output_tokens": 42}}',
        '{"type": "message_stop"}',
    ):
        meter.event(parse_frame(f"data: {data}\n\n".encode()))  # type: ignore[arg-type]
    assert meter.done and meter.model == "claude-x"
    assert meter.usage == Usage(uncached_input=10, cache_read=90, output=42)


def test_deepseek_chat_usage_on_the_last_chunk() -> None:
    meter = Meter("openai-chat")
    meter.event(
        parse_frame(  # type: ignore[arg-type]
            b'data: {"model": "deepseek-v4-flash", "choices": [], "usage": {"prompt_tokens": 100,'
            b' "completion_tokens": 7, "prompt_cache_hit_tokens": 60,'
            b' "prompt_cache_miss_tokens": 40}}\n\n'
        )
    )
    meter.event(parse_frame(b"data: [DONE]\n\n"))  # type: ignore[arg-type]
    assert meter.done and meter.usage == Usage(uncached_input=40, cache_read=60, output=7)


def test_not_json_is_malformed() -> None:
    with pytest.raises(Malformed):
        Meter("openai-responses").event(parse_frame(b"data: {nope\n\n"))  # type: ignore[arg-type]
    with pytest.raises(Malformed):
        Meter("anthropic").body(b"<html>")
