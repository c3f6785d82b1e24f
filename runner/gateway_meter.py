"""Reading usage out of model replies as they pass through the gateway: SSE framing, and
one meter per wire protocol for streamed and whole JSON replies.

Usage is normalised with the same parsers our own clients use (`app.llm.*.parse_usage`),
so the gateway's numbers and the in-process agent's are the same kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.llm import anthropic as anthropic_wire
from app.llm import openai_chat, openai_responses
from app.llm.types import Protocol, Usage

_FRAME_ENDS = (b"\r\n\r\n", b"\n\n", b"\r\r")


class SseFrames:
    """Splits a byte stream into complete SSE frames (each ending in a blank line), so
    the gateway forwards and meters whole events only."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            found = [(i, end) for end in _FRAME_ENDS if (i := self._buffer.find(end)) >= 0]
            if not found:
                return frames
            index, end = min(found)
            frames.append(self._buffer[: index + len(end)])
            self._buffer = self._buffer[index + len(end) :]

    @property
    def rest(self) -> bytes:
        """Bytes after the last complete frame (a stream that ends here was cut off)."""
        return self._buffer


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: str


def parse_frame(frame: bytes) -> SseEvent | None:
    """The frame's event name and joined `data:` lines; None for comments/keep-alives."""
    event: str | None = None
    data: list[str] = []
    for raw in frame.decode("utf-8", "replace").splitlines():
        if not raw or raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if not data:
        return None
    return SseEvent(event, "\n".join(data))


class Malformed(ValueError):
    """The upstream sent something that is not the protocol: a non-JSON event or body."""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Meter:
    """What one reply said about itself: usage, model, whether it finished, its error."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.usage: Usage | None = None
        self.model: str | None = None
        self.done = False
        """The stream's final event arrived (or the whole body was read)."""
        self.error: str | None = None
        """A provider error the reply carried (mid-stream error event, failed response)."""
        self._anthropic_usage: dict[str, Any] = {}

    def event(self, event: SseEvent) -> None:
        """One streamed event; raises Malformed when its data is not JSON."""
        if event.data == "[DONE]":
            self.done = True
            return
        try:
            data = json.loads(event.data)
        except ValueError:
            raise Malformed(f"an event's data is not JSON: {event.data[:80]!r}") from None
        if not isinstance(data, dict):
            raise Malformed("an event's data is not a JSON object")
        if self.protocol == "anthropic":
            self._anthropic_event(data)
        elif self.protocol == "openai-responses":
            self._responses_event(data)
        else:
            self._chat_chunk(data)

    def body(self, raw: bytes) -> None:
        """A whole (non-streamed) 2xx JSON reply."""
        try:
            data = json.loads(raw)
        except ValueError:
            raise Malformed("the reply body is not JSON") from None
        if not isinstance(data, dict):
            raise Malformed("the reply body is not a JSON object")
        self.done = True
        self.model = data.get("model") if isinstance(data.get("model"), str) else None
        if "usage" not in data or not isinstance(data["usage"], dict):
            return
        if self.protocol == "anthropic":
            self.usage = anthropic_wire.parse_usage(data["usage"])
        elif self.protocol == "openai-responses":
            self.usage = openai_responses.parse_usage(data["usage"])
        else:
            self.usage = openai_chat.parse_usage(data["usage"])

    def _anthropic_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = _dict(data.get("message"))
            self.model = message.get("model") if isinstance(message.get("model"), str) else None
            self._anthropic_usage = dict(_dict(message.get("usage")))
        elif kind == "message_delta":
            # Counts here are cumulative and override message_start's.
            self._anthropic_usage.update(_dict(data.get("usage")))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = str(_dict(data.get("error")).get("message") or "error event")
        else:
            return
        if self._anthropic_usage:
            self.usage = anthropic_wire.parse_usage(self._anthropic_usage)

    def _responses_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = _dict(data.get("response"))
            model = response.get("model")
            self.model = model if isinstance(model, str) else self.model
            if isinstance(response.get("usage"), dict):
                self.usage = openai_responses.parse_usage(response["usage"])
            if kind == "response.failed":
                error = _dict(response.get("error"))
                self.error = str(error.get("message") or "response.failed")
            self.done = True
        elif kind == "error":
            self.error = str(data.get("message") or "error event")

    def _chat_chunk(self, data: dict[str, Any]) -> None:
        if "error" in data:
            self.error = str(_dict(data.get("error")).get("message") or "error chunk")
            return
        if isinstance(data.get("model"), str):
            self.model = data["model"]
        if isinstance(data.get("usage"), dict):
            self.usage = openai_chat.parse_usage(data["usage"])


def stream_error_frame(protocol: Protocol, message: str) -> bytes:
    """The event a provider sends when a stream fails after it started, in `protocol`'s
    shape, so the client reports an API error instead of a parse failure."""
    if protocol == "anthropic":
        payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"
    if protocol == "openai-responses":
        failed = {
            "type": "response.failed",
            "sequence_number": 0,
            "response": {
                "object": "response",
                "status": "failed",
                "error": {"code": "server_error", "message": message},
                "output": [],
                "usage": None,
            },
        }
        return b"event: response.failed\ndata: " + json.dumps(failed).encode() + b"\n\n"
    chunk = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"
