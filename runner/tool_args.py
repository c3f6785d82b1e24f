"""A tool call's arguments, checked with messages that name the fix, and the size of what
goes back (pure). Every misuse becomes a ToolError whose message the model receives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.markdown import keep_ends

MAX_OUTPUT = 12_000
"""Characters of any one tool result; longer output keeps its start and end."""


def cap_text(text: str, limit: int = MAX_OUTPUT) -> str:
    """Keep the first third and the last two thirds of `limit`: errors sit at the end."""
    return keep_ends(text, limit, lambda dropped: f"[... {dropped} characters not shown ...]")


class ToolError(ValueError):
    """A tool was used wrongly; the message goes back to the model as an error result."""


class RefusedChange(ToolError):
    """A change baro will not make (under .github/workflows/): the agent is told, and the
    refusal is kept for the report like the ones found before committing."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.line = f"{path}: {reason}"


class ToolArgs:
    """Typed access to a tool call's arguments with messages that name the fix."""

    def __init__(self, tool: str, args: Mapping[str, Any], known: tuple[str, ...]) -> None:
        unknown = sorted(k for k in args if k not in known)
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise ToolError(f"{tool}: unknown argument(s) {names}; accepted: {', '.join(known)}")
        self.tool = tool
        self.args = {k: v for k, v in args.items() if v is not None}

    def _present(self, key: str, required: bool, context: str) -> Any:
        """The value, None when absent (a ToolError when it is required)."""
        value = self.args.get(key)
        if value is None and required:
            where = f" for {context}" if context else ""
            raise ToolError(f"{self.tool}: missing required argument {key!r}{where}")
        return value

    def text(self, key: str, *, required: bool = False, context: str = "") -> str | None:
        value = self._present(key, required, context)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ToolError(f"{self.tool}: {key!r} must be a string, got {_kind(value)}")
        return value

    def required_text(self, key: str, context: str = "") -> str:
        value = self.text(key, required=True, context=context)
        assert value is not None
        return value

    def integer(self, key: str, *, required: bool = False, context: str = "") -> int | None:
        value = self._present(key, required, context)
        if value is None:
            return None
        parsed = _as_int(value)
        if parsed is None:
            raise ToolError(f"{self.tool}: {key!r} must be an integer, got {_kind(value)}")
        return parsed

    def number(self, key: str) -> float | None:
        value = self.args.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ToolError(f"{self.tool}: {key!r} must be a number of seconds, got {_kind(value)}")

    def line_range(self, key: str) -> tuple[int, int] | None:
        value = self.args.get(key)
        if value is None:
            return None
        bad = ToolError(
            f"{self.tool}: {key!r} must be two integers [start, end] (end -1 = to the end), "
            f"got {_kind(value)}"
        )
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise bad
        start, end = _as_int(value[0]), _as_int(value[1])
        if start is None or end is None:
            raise bad
        return start, end


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
