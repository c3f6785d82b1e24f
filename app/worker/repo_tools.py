"""Read-only tools over a checkout, for the planner: list/glob, grep, view with ranges.

Paths are confined to the checkout (no `..`, no symlink escape, nothing under `.git/`) and
every output is capped, so a hostile repository cannot make the planner read the host or
flood the model's context.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.llm.types import ToolSpec

MAX_OUTPUT = 12_000
MAX_FILE_BYTES = 2_000_000
MAX_LIST = 400
MAX_MATCHES = 200
VIEW_DEFAULT_LINES = 400


class ToolError(ValueError):
    """A tool was used wrongly; the message goes back to the model."""


def _cap(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… output truncated ({len(text) - limit} more characters)"


@dataclass(frozen=True)
class ReadOnlyRepo:
    root: Path

    def resolve(self, path: str) -> Path:
        """A path inside the checkout, or ToolError."""
        cleaned = (path or ".").strip()
        if "\x00" in cleaned:
            raise ToolError("path contains a NUL byte")
        candidate = Path(cleaned)
        if candidate.is_absolute():
            candidate = Path(str(candidate).lstrip("/"))
        root = self.root.resolve()
        target = (root / candidate).resolve()
        if target != root and root not in target.parents:
            raise ToolError(f"{path}: outside the repository")
        rel = target.relative_to(root)
        if rel.parts and rel.parts[0] == ".git":
            raise ToolError(f"{path}: .git is not readable")
        return target

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root.resolve()).as_posix() or "."

    def _walk(self, start: Path) -> list[Path]:
        """Regular files under `start`; symlinks that leave the checkout are skipped."""
        root = self.root.resolve()
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            base = Path(dirpath)
            for name in sorted(filenames):
                path = base / name
                if path.is_symlink():
                    real = path.resolve()
                    if real != root and root not in real.parents:
                        continue
                files.append(path)
        return files

    def list_files(self, path: str = ".", pattern: str | None = None) -> str:
        """Files under `path` (recursive), optionally filtered by a glob like `**/*.py`."""
        start = self.resolve(path)
        if start.is_file():
            return self._rel(start)
        if not start.is_dir():
            raise ToolError(f"{path}: no such directory")
        names = [self._rel(p) for p in self._walk(start)]
        if pattern:
            names = [n for n in names if _glob_match(n, pattern)]
        if not names:
            return "(no files)"
        shown = names[:MAX_LIST]
        more = len(names) - len(shown)
        suffix = f"\n… {more} more files (narrow the path or pattern)" if more else ""
        return "\n".join(shown) + suffix

    def grep(self, pattern: str, path: str = ".", glob: str | None = None) -> str:
        """Lines matching a regular expression, as `file:line: text`."""
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression: {exc}") from None
        start = self.resolve(path)
        files = [start] if start.is_file() else self._walk(start)
        hits: list[str] = []
        for file in files:
            rel = self._rel(file)
            if glob and not _glob_match(rel, glob):
                continue
            text = _read_text(file)
            if text is None:
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if regex.search(line):
                    hits.append(f"{rel}:{number}: {line[:300]}")
                    if len(hits) >= MAX_MATCHES:
                        return _cap("\n".join(hits) + "\n… more matches not shown")
        return _cap("\n".join(hits)) if hits else "(no matches)"

    def view(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        """A file with line numbers (a range if given), or a directory listing."""
        target = self.resolve(path)
        if target.is_dir():
            entries = sorted(target.iterdir())
            lines = [
                self._rel(e) + ("/" if e.is_dir() else "") for e in entries if e.name != ".git"
            ]
            return "\n".join(lines[:MAX_LIST]) or "(empty directory)"
        if not target.is_file():
            raise ToolError(f"{path}: no such file")
        text = _read_text(target)
        if text is None:
            raise ToolError(f"{path}: binary or too large to view")
        lines = text.splitlines()
        first = max(1, start_line or 1)
        last = min(len(lines), end_line or first + VIEW_DEFAULT_LINES - 1)
        if lines and first > len(lines):
            raise ToolError(f"{path} has {len(lines)} lines; start_line {first} is past the end")
        body = "\n".join(f"{n:>5}  {lines[n - 1]}" for n in range(first, last + 1))
        footer = f"\n(lines {first}-{last} of {len(lines)})" if last < len(lines) else ""
        return _cap(body + footer)

    def read_optional(self, path: str, limit: int = 20_000) -> str | None:
        """A whole small file if present (AGENTS.md, README…), else None."""
        try:
            target = self.resolve(path)
        except ToolError:
            return None
        if not target.is_file():
            return None
        text = _read_text(target)
        return None if text is None else text[:limit]

    def call(self, name: str, args: dict[str, Any]) -> str:
        """Dispatch a model's tool call; ToolError for unknown tools or bad arguments."""
        try:
            if name == "list_files":
                return self.list_files(_str(args, "path", "."), _opt_str(args, "pattern"))
            if name == "grep":
                return self.grep(
                    _str(args, "pattern"), _str(args, "path", "."), _opt_str(args, "glob")
                )
            if name == "view":
                return self.view(
                    _str(args, "path"), _opt_int(args, "start_line"), _opt_int(args, "end_line")
                )
        except KeyError as exc:
            raise ToolError(f"{name}: missing argument {exc}") from None
        raise ToolError(f"unknown tool {name!r}")


def _str(args: dict[str, Any], key: str, default: str | None = None) -> str:
    value = args.get(key, default)
    if value is None:
        raise KeyError(key)
    if not isinstance(value, str):
        raise ToolError(f"argument {key!r} must be a string")
    return value


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ToolError(f"argument {key!r} must be a string")
    return value


def _opt_int(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError(f"argument {key!r} must be an integer")
    return value


def _glob_match(rel: str, pattern: str) -> bool:
    if fnmatch.fnmatch(rel, pattern):
        return True
    if pattern.startswith("**/"):
        return fnmatch.fnmatch(rel, pattern[3:])
    return "/" not in pattern and fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern)


def _read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


READ_TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="list_files",
        description="List files under a directory of the repository (recursive).",
        parameters={
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "directory, default the root"},
                "pattern": {"type": "string", "description": "optional glob, e.g. **/*.py"},
            },
        },
    ),
    ToolSpec(
        name="grep",
        description="Search file contents with a regular expression; shows file:line: text.",
        parameters={
            "type": "object",
            "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "file or directory, default root"},
                "glob": {"type": "string", "description": "optional file filter, e.g. *.py"},
            },
            "required": ["pattern"],
        },
    ),
    ToolSpec(
        name="view",
        description="Show a file with line numbers (optionally a line range), or list a directory.",
        parameters={
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "start_line": {"type": "integer"},
                "end_line": {"type": "integer"},
            },
            "required": ["path"],
        },
    ),
)
