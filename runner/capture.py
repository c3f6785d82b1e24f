"""Bounded capture of a command's output: the first and last bytes, never the middle.

A test run that prints gigabytes must not grow the runner's memory, and the model needs the
start (what ran) and the end (why it failed) far more than the middle.
"""

from __future__ import annotations

import asyncio


class CappedOutput:
    """Keeps up to `head` leading and `tail` trailing bytes and counts what falls between."""

    def __init__(self, head: int, tail: int) -> None:
        if head < 0 or tail < 0:
            raise ValueError("head and tail must not be negative")
        self._head_cap = head
        self._tail_cap = tail
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data or self._tail_cap == 0:
            return
        if len(data) >= self._tail_cap:
            self._tail[:] = data[-self._tail_cap :]
        else:
            self._tail += data
            excess = len(self._tail) - self._tail_cap
            if excess > 0:
                del self._tail[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        """Head and tail decoded leniently, with a marker where bytes were dropped."""
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        if self.dropped == 0:
            return head + tail
        return f"{head}\n[... {self.dropped} bytes of output dropped ...]\n{tail}"


class CaptureProtocol(asyncio.Protocol):
    """Feeds a read pipe into a CappedOutput; `done` resolves when every writer has closed."""

    def __init__(self, sink: CappedOutput) -> None:
        self._sink = sink
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._sink.add(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
