"""Server-sent events as the providers frame them, and the faults a stream can have.

Each protocol module turns its complete reply into a list of `Event`s; the server
sends them in order. A scripted stream fault cuts or corrupts that list, so clients
and the gateway see what a broken upstream looks like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One SSE event: `event:` line (omitted when None) and a JSON or raw `data:` line."""

    data: dict[str, Any] | str
    event: str | None = None

    def encode(self) -> bytes:
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.event}\n" if self.event is not None else ""
        return f"{head}data: {data}\n\n".encode()


def pieces(text: str, parts: int = 3) -> list[str]:
    """`text` in up to `parts` consecutive slices, so clients really concatenate deltas."""
    if not text:
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


MALFORMED = b'data: {"type": "content_block_delta", "index": 0, "delta": {"ty\n\n'
"""A data line that is not JSON: what a proxy truncating a frame produces."""
