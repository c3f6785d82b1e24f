"""Script rules that drive the real agent CLIs: "the CLI writes file X with content Y,
then stops", using each CLI's own file-writing tool as observed with the pinned versions
(see README.md, "What the CLIs send").

    rules = [writes_file("claude-code", "/work/hello.txt", "hi\\n")]
    with running_model_server(rules) as srv: ...
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

EngineName = Literal["claude-code", "codex"]
ClaudeTool = Literal["Write", "Bash"]
CodexTool = Literal["apply_patch", "exec_command"]

_PROTOCOL: dict[EngineName, str] = {"claude-code": "anthropic", "codex": "openai-responses"}
_DEFAULT_TOOL: dict[EngineName, str] = {"claude-code": "Write", "codex": "apply_patch"}


def add_file_patch(path: str, content: str) -> str:
    """An `apply_patch` patch creating `path` (each line of `content` becomes `+line`)."""
    lines = "".join(f"+{line}\n" for line in content.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{lines}*** End Patch\n"


def _shell_write(path: str, content: str) -> str:
    return f"printf %s {shlex.quote(content)} > {shlex.quote(path)}"


def write_call(
    engine: EngineName, path: str, content: str, tool: str | None = None
) -> dict[str, Any]:
    """The scripted tool call with which `engine`'s agent writes `content` to `path`.

    Claude Code: `Write {file_path, content}` (the schema asks for an absolute path) or
    `Bash {command}`. Codex: `apply_patch`, a freeform (`type: custom`) tool whose input is
    the patch text (offered for models Codex knows, e.g. gpt-5.5; with `add_file_patch`
    the content should end with a newline), or `exec_command {cmd}`.
    """
    tool = tool or _DEFAULT_TOOL[engine]
    if engine == "claude-code" and tool == "Write":
        return {"name": "Write", "arguments": {"file_path": path, "content": content}}
    if engine == "claude-code" and tool == "Bash":
        return {"name": "Bash", "arguments": {"command": _shell_write(path, content)}}
    if engine == "codex" and tool == "apply_patch":
        return {"name": "apply_patch", "raw_arguments": add_file_patch(path, content)}
    if engine == "codex" and tool == "exec_command":
        return {"name": "exec_command", "arguments": {"cmd": _shell_write(path, content)}}
    raise ValueError(f"{engine} has no file-writing tool {tool!r} here")


def writes_file(
    engine: EngineName,
    path: str,
    content: str,
    *,
    task: str | None = None,
    tool: str | None = None,
    done: str = "Done.",
    usage: dict[str, int] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A rule: when a user message mentions `task` (default: `path`'s name), the agent
    calls its file-writing tool once, then answers `done` and the CLI stops.

    Matches `any_user` because neither CLI's prompt is the first user text: Claude Code
    puts a `<system-reminder>` block first, Codex an `<environment_context>` item.
    """
    needle = task if task is not None else path.rsplit("/", 1)[-1]
    turn: dict[str, Any] = {"tool_calls": [write_call(engine, path, content, tool)]}
    last: dict[str, Any] = {"text": done}
    if usage is not None:
        turn["usage"] = usage
        last["usage"] = usage
    return {
        "name": name or f"{engine} writes {path}",
        "match": {"protocol": _PROTOCOL[engine], "any_user": re.escape(needle)},
        "turns": [turn, last],
    }
