"""The story agent's tools: `bash` in the sandbox, a text `editor`, and `finish`.

Modelled on the minimal set cheap models handle well (SWE-agent, Anthropic's text editor):
flat schemas, few required fields, a numbered snippet after every edit and precise errors.
Every misuse comes back as an error result the model can act on, never as an exception.
The editor lives in `runner.editor`, argument checking in `runner.tool_args`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.llm.types import ToolSpec
from runner.editor import EDITOR_COMMANDS, SANDBOX_ROOT, Editor, WorktreePaths
from runner.process import CommandResult
from runner.sandbox import CommandSandbox
from runner.tool_args import MAX_OUTPUT, RefusedChange, ToolArgs, ToolError, cap_text

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_OUTPUT",
    "MAX_TIMEOUT",
    "SANDBOX_ROOT",
    "TOOL_SPECS",
    "StoryTools",
    "ToolError",
    "ToolOutcome",
    "WorktreePaths",
    "cap_text",
]

DEFAULT_TIMEOUT = 120.0
MAX_TIMEOUT = 600.0


@dataclass(frozen=True)
class ToolOutcome:
    """One tool result; `finished` holds the summary when `finish` was accepted."""

    content: str
    is_error: bool = False
    finished: str | None = None
    refused: str | None = None
    """A change baro refused to make (`path: why`), for the report."""


# --- the tools -------------------------------------------------------------------------------


class StoryTools:
    """The tools of one story's agent over one worktree."""

    specs: tuple[ToolSpec, ...]

    def __init__(
        self,
        worktree: Path,
        sandbox: CommandSandbox,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_timeout: float = MAX_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.worktree = worktree
        self.paths = WorktreePaths(worktree)
        self._editor = Editor(self.paths)
        self.sandbox = sandbox
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.env = env
        self.specs = TOOL_SPECS

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Run one tool call; every misuse is returned as an error outcome."""
        try:
            if name == "bash":
                return await self.bash(arguments)
            if name == "editor":
                return ToolOutcome(self._editor.run(arguments))
            if name == "finish":
                return self.finish(arguments)
            names = ", ".join(spec.name for spec in self.specs)
            raise ToolError(f"unknown tool {name!r}; the tools are: {names}")
        except RefusedChange as exc:
            return ToolOutcome(f"error: {exc}", is_error=True, refused=exc.line)
        except ToolError as exc:
            return ToolOutcome(f"error: {exc}", is_error=True)
        except OSError as exc:
            return ToolOutcome(f"error: {name}: {self._os_error(exc)}", is_error=True)
        except ValueError as exc:  # e.g. text that cannot be encoded (lone surrogates)
            return ToolOutcome(f"error: {name}: {exc}", is_error=True)

    def _os_error(self, exc: OSError) -> str:
        """The OS's reason, with the host path shown relative to the repository."""
        reason = exc.strerror or str(exc)
        if isinstance(exc.filename, str):
            try:
                shown = self.paths.rel(Path(exc.filename).resolve())
            except ValueError:
                shown = Path(exc.filename).name
            return f"{shown}: {reason}"
        return reason

    # bash

    async def bash(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        args = ToolArgs("bash", arguments, ("command", "timeout"))
        command = args.required_text("command")
        if not command.strip():
            raise ToolError("bash: 'command' is empty")
        timeout = args.number("timeout")
        note = ""
        if timeout is None:
            timeout = self.default_timeout
        elif timeout <= 0:
            raise ToolError("bash: 'timeout' must be positive")
        elif timeout > self.max_timeout:
            note = f"(timeout lowered to the maximum, {self.max_timeout:g} s)\n"
            timeout = self.max_timeout
        try:
            result = await self.sandbox.run(
                command, cwd=self.worktree, timeout=timeout, network=False, env=self.env
            )
        except (OSError, ValueError) as exc:
            message = f"error: the sandbox could not run the command: {exc}"
            return ToolOutcome(message, is_error=True)
        return ToolOutcome(note + describe_result(result, timeout))

    # finish

    def finish(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        args = ToolArgs("finish", arguments, ("summary",))
        summary = args.required_text("summary").strip()
        if not summary:
            raise ToolError("finish: 'summary' is empty; say in a sentence or two what changed")
        return ToolOutcome(
            "Finish received. baro now runs the story's tests and the verification commands.",
            finished=summary,
        )


def describe_result(result: CommandResult, timeout: float) -> str:
    """Output first, then one status line the model cannot miss."""
    output = cap_text(result.output.rstrip("\n")) if result.output.strip() else "(no output)"
    took = f"{result.duration:.1f} s"
    if result.timed_out:
        status = (
            f"[timed out after {timeout:g} s; the command was killed. Use a larger timeout "
            f"(max {MAX_TIMEOUT:g}) or a smaller step]"
        )
    elif result.killed_by_signal is not None:
        status = (
            f"[exit code {result.exit_code}: killed by signal {result.killed_by_signal}, "
            f"possibly a memory, CPU or process limit; {took}]"
        )
    else:
        status = f"[exit code {result.exit_code}; {took}]"
    return f"{output}\n{status}"


TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="bash",
        description=(
            "Run a shell command (bash -c) at the repository root inside a sandbox with no "
            "network. Nothing carries over between calls except files (cd and variables do "
            "not). Shows stdout and stderr merged (long output keeps its start and end) and "
            "the exit code. Use it to search (grep -rn, ls, find) and to run tests."
        ),
        parameters={
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "the command line"},
                "timeout": {
                    "type": "integer",
                    "description": f"seconds, default {DEFAULT_TIMEOUT:g}, max {MAX_TIMEOUT:g}",
                },
            },
            "required": ["command"],
        },
    ),
    ToolSpec(
        name="editor",
        description=(
            "View, create and edit files. Paths are relative to the repository root.\n"
            "- view: a file with line numbers (view_range [start, end] shows part; end -1 = "
            "to the end), or a directory listing two levels deep.\n"
            "- create: write file_text to path (makes directories; overwrites a file).\n"
            "- str_replace: replace old_str with new_str. old_str must match exactly once, "
            "whitespace and indentation included; copy it from view output without the line "
            "numbers. Omit new_str to delete.\n"
            "- insert: insert new_str after line insert_line (0 = at the top)."
        ),
        parameters={
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": list(EDITOR_COMMANDS)},
                "path": {"type": "string", "description": "e.g. src/app.py"},
                "file_text": {"type": "string", "description": "create: the whole file"},
                "old_str": {"type": "string", "description": "str_replace: exact text"},
                "new_str": {"type": "string", "description": "str_replace/insert: new text"},
                "insert_line": {"type": "integer", "description": "insert: after this line"},
                "view_range": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "view: [start, end], 1-based, end -1 = to the end",
                },
            },
            "required": ["command", "path"],
        },
    ),
    ToolSpec(
        name="finish",
        description=(
            "Declare the story done, once its tests pass. baro then runs the tests and the "
            "repository's verification commands; failures come back to you to fix."
        ),
        parameters={
            "type": "object",
            "properties": {
                "summary": {
                    "type": "string",
                    "description": "one to three sentences: what you changed",
                },
            },
            "required": ["summary"],
        },
    ),
)
