"""The story agent's text editor: view, create, str_replace, insert, confined to one worktree.

Modelled on Anthropic's text editor tool: a numbered snippet after every edit and precise
errors. Paths are confined to the worktree: no `..` or symlink escape and nothing under a
`.git`; it writes only while no sandbox process is alive (`runner.sandbox` guarantees that
outside a command), so what it resolved cannot change under it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner.tool_args import MAX_OUTPUT, RefusedChange, ToolArgs, ToolError, cap_text

MAX_VIEW_BYTES = 1_000_000
MAX_LINE_CHARS = 2_000
MAX_LISTING = 400
SNIPPET_CONTEXT = 4
SANDBOX_ROOT = "/workspace"
"""Where the worktree appears inside the sandbox; the model may use it in editor paths."""
WORKFLOWS_DIR = (".github", "workflows")
_UNEXPANDED_DIRS = frozenset(
    {"node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".tox"}
)
EDITOR_COMMANDS = ("view", "create", "str_replace", "insert")


class WorktreePaths:
    """Maps the model's paths to real paths inside one worktree, or raises ToolError."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, path: str) -> Path:
        cleaned = path.strip()
        if not cleaned:
            raise ToolError("path is empty; give a path relative to the repository root")
        if "\x00" in cleaned:
            raise ToolError("path contains a NUL byte")
        candidate = Path(cleaned)
        if candidate.is_absolute():
            candidate = self._from_absolute(path, candidate)
        if any(part.lower() == ".git" for part in candidate.parts):
            raise ToolError(f"{path}: .git is off limits (baro commits for you)")
        try:
            target = (self.root / candidate).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before 3.13)
            raise ToolError(f"{path}: cannot be resolved ({exc})") from None
        if not target.is_relative_to(self.root):
            raise ToolError(
                f"{path}: outside the repository (paths must stay inside the repository root, "
                "also through symlinks)"
            )
        rel = target.relative_to(self.root)
        if any(part.lower() == ".git" for part in rel.parts):
            raise ToolError(f"{path}: leads into .git, which is off limits")
        return target

    def _from_absolute(self, original: str, candidate: Path) -> Path:
        sandbox_root = Path(SANDBOX_ROOT)
        if candidate == sandbox_root or candidate.is_relative_to(sandbox_root):
            return candidate.relative_to(sandbox_root)
        if candidate.is_relative_to(self.root):
            return candidate.relative_to(self.root)
        raise ToolError(
            f"{original}: absolute paths outside the repository are not allowed; use a path "
            f"relative to the repository root (which bash sees as {SANDBOX_ROOT})"
        )

    def rel(self, target: Path) -> str:
        return target.relative_to(self.root).as_posix() or "."


def _numbered(lines: list[str], first: int) -> str:
    out = []
    for number, line in enumerate(lines, first):
        text = line.rstrip("\r\n")
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + f" … ({len(text) - MAX_LINE_CHARS} more characters)"
        out.append(f"{number:>6}\t{text}")
    return "\n".join(out)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _occurrences(text: str, needle: str) -> list[int]:
    found, start = [], 0
    while (index := text.find(needle, start)) != -1:
        found.append(index)
        start = index + len(needle)
    return found


def _snippet(text: str, first: int, last: int) -> str:
    lines = text.splitlines()
    lo = max(1, first - SNIPPET_CONTEXT)
    hi = min(len(lines), last + SNIPPET_CONTEXT)
    if hi < lo:
        return "(the file is now empty)"
    return _numbered(lines[lo - 1 : hi], lo)


def _closest(text: str, old: str) -> str:
    """A hint for a failed match: whitespace-only differences, or the most similar lines."""
    lines = text.splitlines()
    wanted = [ln.strip() for ln in old.splitlines() if ln.strip()]
    if not wanted or not lines:
        return ""
    stripped = [ln.strip() for ln in lines]
    nonblank = [(i, s) for i, s in enumerate(stripped) if s]
    size = len(wanted)
    for k in range(len(nonblank) - size + 1):
        if [s for _, s in nonblank[k : k + size]] == wanted:
            first, last = nonblank[k][0], nonblank[k + size - 1][0]
            return (
                f"\nThe text matches at line {first + 1} only if whitespace and indentation "
                f"are ignored; copy it exactly:\n{_numbered(lines[first : last + 1], first + 1)}"
            )
    best, best_ratio = -1, 0.0
    for i, line in enumerate(stripped):
        if not line:
            continue
        ratio = difflib.SequenceMatcher(None, wanted[0], line).ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    if best < 0 or best_ratio < 0.6:
        return "\nNothing similar was found; view the file to see its current content."
    lo = max(0, best - 1)
    hi = min(len(lines), best + len(wanted) + 1)
    return f"\nThe closest lines are:\n{_numbered(lines[lo:hi], lo + 1)}"


def _read_bytes(target: Path, shown: str) -> bytes:
    if target.is_dir():
        raise ToolError(f"{shown} is a directory")
    if not target.exists():
        raise ToolError(f"{shown}: no such file (create it with the create command)")
    if not target.is_file():
        raise ToolError(f"{shown} is not a regular file")
    return target.read_bytes()


def _read_editable(target: Path, shown: str) -> str:
    data = _read_bytes(target, shown)
    if b"\x00" in data[:8192]:
        raise ToolError(f"{shown} is a binary file; the editor only edits text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{shown} is not UTF-8 text; edit it with bash instead") from None


def _write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


class Editor:
    """The editor over one worktree."""

    def __init__(self, paths: WorktreePaths) -> None:
        self.paths = paths

    def run(self, arguments: Mapping[str, Any]) -> str:
        args = ToolArgs(
            "editor",
            arguments,
            (
                "command",
                "path",
                "file_text",
                "old_str",
                "new_str",
                "insert_line",
                "view_range",
                "insert_text",
            ),
        )
        command = args.required_text("command")
        handlers: dict[str, Callable[[ToolArgs, Path, str], str]] = {
            "view": self._view,
            "create": self._create,
            "str_replace": self._str_replace,
            "insert": self._insert,
        }
        handler = handlers.get(command)
        if handler is None:
            raise ToolError(
                f"editor: unknown command {command!r}; use one of {', '.join(EDITOR_COMMANDS)}"
            )
        path = args.required_text("path", command)
        target = self.paths.resolve(path)
        return handler(args, target, self.paths.rel(target))

    def _check_writable(self, target: Path, shown: str) -> None:
        rel = target.relative_to(self.paths.root).parts
        if rel[: len(WORKFLOWS_DIR)] == WORKFLOWS_DIR:
            raise RefusedChange(
                shown,
                "baro cannot push changes under .github/workflows/ (the App has no workflows "
                "permission); leave workflow files alone",
            )
        if target == self.paths.root or target.is_dir():
            raise ToolError(f"{shown} is a directory")

    def _view(self, args: ToolArgs, target: Path, shown: str) -> str:
        view_range = args.line_range("view_range")
        if target.is_dir():
            if view_range is not None:
                raise ToolError(f"{shown} is a directory; view_range only applies to files")
            return self._listing(target, shown)
        if not target.exists():
            raise ToolError(f"{shown}: no such file or directory")
        if not target.is_file():
            raise ToolError(f"{shown} is not a regular file")
        size = target.stat().st_size
        with open(target, "rb") as handle:
            if b"\x00" in handle.read(8192):
                return f"{shown} is a binary file ({size:,} bytes); not shown"
        if view_range is None:
            if size > MAX_VIEW_BYTES:
                raise ToolError(
                    f"{shown} is {size:,} bytes, too large to view whole; view part of it "
                    "with view_range [start, end], or search it with bash (grep -n)"
                )
            return self._view_all(target, shown)
        return self._view_range(target, shown, view_range)

    def _view_all(self, target: Path, shown: str) -> str:
        lines = target.read_bytes().decode("utf-8", errors="replace").splitlines()
        if not lines:
            return f"{shown} is empty"
        out: list[str] = []
        used = 0
        for number, line in enumerate(lines, 1):
            rendered = _numbered([line], number)
            if used + len(rendered) + 1 > MAX_OUTPUT and out:
                out.append(
                    f"(showing lines 1-{number - 1} of {len(lines)}; view the rest with "
                    f"view_range [{number}, -1])"
                )
                break
            out.append(rendered)
            used += len(rendered) + 1
        return "\n".join(out)

    def _view_range(self, target: Path, shown: str, view_range: tuple[int, int]) -> str:
        start, end = view_range
        if start < 1:
            raise ToolError(f"view_range start must be 1 or more, got {start}")
        if end != -1 and end < start:
            raise ToolError(f"view_range end ({end}) is before its start ({start}); -1 = to end")
        picked: list[str] = []
        total = 0
        with open(target, encoding="utf-8", errors="replace", newline="") as handle:
            for line in handle:
                total += 1
                if total >= start and (end == -1 or total <= end):
                    picked.append(line)
        if total == 0:
            return f"{shown} is empty"
        if start > total:
            raise ToolError(f"view_range starts at line {start}, but {shown} has {total} lines")
        body = _numbered(picked, start)
        last = start + len(picked) - 1
        if len(body) > MAX_OUTPUT:
            body = cap_text(body)
        note = f"\n(lines {start}-{last} of {total})" if (start > 1 or last < total) else ""
        return body + note

    def _listing(self, target: Path, shown: str) -> str:
        entries: list[str] = []
        more = 0
        for child in sorted(target.iterdir()):
            if child.name == ".git":
                continue
            for line in self._entry(child, depth=1):
                if len(entries) < MAX_LISTING:
                    entries.append(line)
                else:
                    more += 1
        header = f"Files and directories up to 2 levels deep in {shown} (excluding .git):"
        if not entries:
            return f"{header}\n(empty directory)"
        footer = f"\n… {more} more entries (view a subdirectory)" if more else ""
        return header + "\n" + "\n".join(entries) + footer

    def _entry(self, path: Path, depth: int) -> list[str]:
        shown = path.relative_to(self.paths.root).as_posix()
        if path.is_symlink():
            return [f"{shown}@"]
        if not path.is_dir():
            return [shown]
        if path.name in _UNEXPANDED_DIRS:
            return [f"{shown}/ (not expanded)"]
        lines = [f"{shown}/"]
        if depth < 2:
            try:
                children = sorted(path.iterdir())
            except OSError:
                return lines
            for child in children:
                if child.name != ".git":
                    lines += self._entry(child, depth + 1)
        return lines

    def _create(self, args: ToolArgs, target: Path, shown: str) -> str:
        text = args.required_text("file_text", "create")
        self._check_writable(target, shown)
        existed = target.exists()
        if existed and not target.is_file():
            raise ToolError(f"{shown} exists and is not a regular file")
        _write(target, text)
        count = len(text.splitlines())
        if existed:
            return f"Overwrote the existing file {shown} ({count} lines)."
        return f"Created {shown} ({count} lines)."

    def _str_replace(self, args: ToolArgs, target: Path, shown: str) -> str:
        old = args.required_text("old_str", "str_replace")
        new = args.text("new_str") or ""
        if old == "":
            raise ToolError("str_replace: 'old_str' is empty; to add text use insert or create")
        if old == new:
            raise ToolError("str_replace: old_str and new_str are identical; nothing to change")
        self._check_writable(target, shown)
        text = _read_editable(target, shown)
        if "\r\n" in text and "\r" not in old:
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
        found = _occurrences(text, old)
        if not found:
            raise ToolError(f"no match for old_str in {shown}.{_closest(text, old)}")
        if len(found) > 1:
            lines = ", ".join(str(_line_of(text, i)) for i in found)
            raise ToolError(
                f"old_str matches {len(found)} times in {shown}, at lines {lines}; make it "
                "unique by including more surrounding lines"
            )
        at = found[0]
        updated = text[:at] + new + text[at + len(old) :]
        _write(target, updated)
        first = _line_of(updated, at)
        last = first + max(new.count("\n"), 0)
        return (
            f"Edited {shown}. A snippet of the result:\n{_snippet(updated, first, last)}\n"
            "Check the snippet; edit again if it is not right."
        )

    def _insert(self, args: ToolArgs, target: Path, shown: str) -> str:
        line = args.integer("insert_line", required=True, context="insert")
        new = args.text("new_str")
        if new is None:
            new = args.text("insert_text")
        if new is None:
            raise ToolError("editor: missing required argument 'new_str' for insert")
        assert line is not None
        self._check_writable(target, shown)
        text = _read_editable(target, shown)
        lines = text.splitlines(keepends=True)
        if not 0 <= line <= len(lines):
            raise ToolError(
                f"insert_line {line} is out of range: {shown} has {len(lines)} lines, so use "
                f"0 (top) to {len(lines)} (end)"
            )
        eol = "\r\n" if "\r\n" in text else "\n"
        if eol == "\r\n" and "\r" not in new:
            new = new.replace("\n", "\r\n")
        if not new.endswith("\n"):
            new += eol
        if line > 0 and not lines[line - 1].endswith("\n"):
            lines[line - 1] += eol
        lines.insert(line, new)
        updated = "".join(lines)
        _write(target, updated)
        first = line + 1
        last = line + len(new.splitlines())
        return (
            f"Inserted {last - line} line(s) after line {line} of {shown}. A snippet of the "
            f"result:\n{_snippet(updated, first, last)}\n"
            "Check the snippet (indentation!); edit again if it is not right."
        )
