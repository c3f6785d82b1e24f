"""The story agent's tools: editor behaviour and messages, path confinement, bash in bwrap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.sandbox import NoSandbox, Sandbox
from runner.tools import MAX_OUTPUT, StoryTools, ToolOutcome, cap_text
from tests.runner.conftest import Area

SAMPLE = "".join(f"line {n}\n" for n in range(1, 31))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "wt"
    (root / "src" / "pkg" / "deep").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "src" / "pkg" / "deep" / "hidden.py").write_text("x = 1\n")
    (root / "notes.txt").write_text(SAMPLE)
    (root / "README.md").write_text("# demo\n")
    (root / ".git").write_text("gitdir: /somewhere/mirror.git/worktrees/S1\n")
    (tmp_path / "outside.txt").write_text("secret outside\n")
    return root


@pytest.fixture
def tools(repo: Path) -> StoryTools:
    return StoryTools(repo, NoSandbox())


async def edit(tools: StoryTools, **args: Any) -> ToolOutcome:
    return await tools.call("editor", args)


# --- view --------------------------------------------------------------------------------------


async def test_view_file_numbers_lines(tools: StoryTools) -> None:
    out = await edit(tools, command="view", path="src/app.py")
    assert not out.is_error
    assert out.content.splitlines() == ["     1\tdef add(a, b):", "     2\t    return a + b"]


async def test_view_range_and_to_end(tools: StoryTools) -> None:
    out = await edit(tools, command="view", path="notes.txt", view_range=[10, 12])
    assert out.content.splitlines()[:3] == ["    10\tline 10", "    11\tline 11", "    12\tline 12"]
    assert "(lines 10-12 of 30)" in out.content
    tail = await edit(tools, command="view", path="notes.txt", view_range=[29, -1])
    assert "line 29" in tail.content and "line 30" in tail.content
    assert "line 28" not in tail.content


async def test_view_range_errors(tools: StoryTools) -> None:
    past = await edit(tools, command="view", path="notes.txt", view_range=[40, 50])
    assert past.is_error and "starts at line 40, but notes.txt has 30 lines" in past.content
    backwards = await edit(tools, command="view", path="notes.txt", view_range=[5, 2])
    assert backwards.is_error and "before its start" in backwards.content
    bad = await edit(tools, command="view", path="notes.txt", view_range="1-5")
    assert bad.is_error and "two integers [start, end]" in bad.content


async def test_view_directory_lists_two_levels_without_git(tools: StoryTools) -> None:
    out = await edit(tools, command="view", path=".")
    lines = out.content.splitlines()
    assert "src/" in lines and "src/app.py" in lines and "src/pkg/" in lines
    assert "src/pkg/deep/" not in lines  # third level
    assert not any(".git" in line for line in lines[1:])
    sub = await edit(tools, command="view", path="src/pkg")
    assert "src/pkg/deep/hidden.py" in sub.content.splitlines()


async def test_view_large_file_needs_a_range(tools: StoryTools, repo: Path) -> None:
    (repo / "big.txt").write_text("".join(f"row {n} " + "x" * 60 + "\n" for n in range(20_000)))
    whole = await edit(tools, command="view", path="big.txt")
    assert whole.is_error and "too large to view whole" in whole.content
    assert "view_range" in whole.content
    part = await edit(tools, command="view", path="big.txt", view_range=[15000, 15001])
    assert not part.is_error and "row 14999 " in part.content and "of 20000" in part.content


async def test_view_caps_long_files_at_line_boundary(tools: StoryTools, repo: Path) -> None:
    (repo / "long.py").write_text("".join(f"value_{n} = {n}\n" for n in range(3000)))
    out = await edit(tools, command="view", path="long.py")
    assert len(out.content) <= MAX_OUTPUT + 200
    assert "view the rest with view_range" in out.content


async def test_view_binary_and_missing(tools: StoryTools, repo: Path) -> None:
    (repo / "blob.bin").write_bytes(b"\x00\x01\x02")
    assert "binary file" in (await edit(tools, command="view", path="blob.bin")).content
    missing = await edit(tools, command="view", path="nope.py")
    assert missing.is_error and "nope.py: no such file" in missing.content


# --- create / str_replace / insert ------------------------------------------------------------


async def test_create_makes_parents_and_says_when_overwriting(
    tools: StoryTools, repo: Path
) -> None:
    out = await edit(tools, command="create", path="new/dir/mod.py", file_text="A = 1\nB = 2\n")
    assert out.content == "Created new/dir/mod.py (2 lines)."
    assert (repo / "new/dir/mod.py").read_text() == "A = 1\nB = 2\n"
    again = await edit(tools, command="create", path="new/dir/mod.py", file_text="C = 3\n")
    assert "Overwrote the existing file new/dir/mod.py" in again.content
    assert (repo / "new/dir/mod.py").read_text() == "C = 3\n"
    on_dir = await edit(tools, command="create", path="src", file_text="x")
    assert on_dir.is_error and "src is a directory" in on_dir.content


async def test_str_replace_success_shows_numbered_snippet(tools: StoryTools, repo: Path) -> None:
    out = await edit(
        tools, command="str_replace", path="notes.txt", old_str="line 15\n", new_str="fifteen\n"
    )
    assert not out.is_error
    assert out.content.startswith("Edited notes.txt.")
    assert "    15\tfifteen" in out.content
    assert "    11\tline 11" in out.content and "    19\tline 19" in out.content
    assert "line 5\n" not in out.content.replace("line 15", "")
    assert "fifteen\n" in (repo / "notes.txt").read_text()


async def test_str_replace_no_match_shows_closest_lines(tools: StoryTools) -> None:
    out = await edit(
        tools, command="str_replace", path="src/app.py", old_str="return a - b", new_str="x"
    )
    assert out.is_error
    assert out.content.startswith("error: no match for old_str in src/app.py.")
    assert "closest lines" in out.content and "     2\t    return a + b" in out.content


async def test_str_replace_whitespace_only_difference_is_named(tools: StoryTools) -> None:
    out = await edit(
        tools, command="str_replace", path="src/app.py", old_str="return a + b", new_str="pass"
    )
    assert not out.is_error  # a substring match is a match
    out = await edit(
        tools,
        command="str_replace",
        path="src/app.py",
        old_str="def add(a, b):\n  pass",
        new_str="x",
    )
    assert out.is_error and "only if whitespace and indentation are ignored" in out.content


async def test_str_replace_multiple_matches_names_lines(tools: StoryTools, repo: Path) -> None:
    (repo / "dup.py").write_text("a\nx = 1\nb\nc\nx = 1\nd\nx = 1\n")
    out = await edit(tools, command="str_replace", path="dup.py", old_str="x = 1", new_str="y")
    assert out.is_error
    assert "old_str matches 3 times in dup.py, at lines 2, 5, 7; make it unique" in out.content
    assert (repo / "dup.py").read_text().count("x = 1") == 3


async def test_str_replace_keeps_crlf(tools: StoryTools, repo: Path) -> None:
    (repo / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    out = await edit(
        tools, command="str_replace", path="win.txt", old_str="one\ntwo", new_str="1\n2"
    )
    assert not out.is_error, out.content
    assert (repo / "win.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"


async def test_insert_after_line_and_at_top(tools: StoryTools, repo: Path) -> None:
    out = await edit(tools, command="insert", path="src/app.py", insert_line=1, new_str="    # sum")
    assert not out.is_error
    assert "     2\t    # sum" in out.content
    assert (repo / "src/app.py").read_text() == "def add(a, b):\n    # sum\n    return a + b\n"
    await edit(tools, command="insert", path="src/app.py", insert_line=0, new_str="import os\n")
    assert (repo / "src/app.py").read_text().startswith("import os\ndef add")
    past = await edit(tools, command="insert", path="src/app.py", insert_line=9, new_str="x")
    assert past.is_error and "insert_line 9 is out of range" in past.content


async def test_insert_at_end_of_file_without_newline(tools: StoryTools, repo: Path) -> None:
    (repo / "raw.txt").write_text("a\nb")
    await edit(tools, command="insert", path="raw.txt", insert_line=2, new_str="c")
    assert (repo / "raw.txt").read_text() == "a\nb\nc\n"


async def test_workflow_files_are_refused(tools: StoryTools) -> None:
    out = await edit(tools, command="create", path=".github/workflows/ci.yml", file_text="on: x")
    assert out.is_error and "workflows permission" in out.content


# --- confinement -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("view", "../outside.txt"),
        ("view", "src/../../outside.txt"),
        ("view", "/etc/passwd"),
        ("create", "/etc/baro-test"),
        ("view", ".git"),
        ("view", ".git/config"),
        ("create", ".git/hooks/pre-commit"),
        ("view", "src/.GIT/config"),
    ],
)
async def test_paths_outside_or_into_git_are_refused(
    tools: StoryTools, command: str, path: str
) -> None:
    out = await edit(tools, command=command, path=path, file_text="x")
    assert out.is_error
    assert "outside the repository" in out.content or ".git" in out.content
    assert not Path("/etc/baro-test").exists()


async def test_symlinks_cannot_escape(tools: StoryTools, repo: Path) -> None:
    outside = repo.parent / "outside.txt"
    (repo / "link.txt").symlink_to(outside)
    (repo / "linkdir").symlink_to(repo.parent)
    (repo / "gitlink").symlink_to(repo / ".git")
    read = await edit(tools, command="view", path="link.txt")
    assert read.is_error and "outside the repository" in read.content
    write = await edit(tools, command="create", path="link.txt", file_text="pwned")
    assert write.is_error
    via_dir = await edit(tools, command="create", path="linkdir/new.txt", file_text="pwned")
    assert via_dir.is_error
    replace = await edit(
        tools, command="str_replace", path="link.txt", old_str="secret", new_str="x"
    )
    assert replace.is_error
    into_git = await edit(tools, command="view", path="gitlink")
    assert into_git.is_error and ".git" in into_git.content
    assert outside.read_text() == "secret outside\n"
    assert not (repo.parent / "new.txt").exists()


async def test_symlink_inside_the_worktree_is_followed(tools: StoryTools, repo: Path) -> None:
    (repo / "alias.py").symlink_to(repo / "src" / "app.py")
    out = await edit(tools, command="view", path="alias.py")
    assert not out.is_error and "def add" in out.content


async def test_absolute_paths_inside_are_accepted(tools: StoryTools, repo: Path) -> None:
    sandbox_style = await edit(tools, command="view", path="/workspace/src/app.py")
    assert "def add" in sandbox_style.content
    host_style = await edit(tools, command="view", path=str(repo / "README.md"))
    assert "# demo" in host_style.content


# --- argument validation -----------------------------------------------------------------------


async def test_bad_arguments_become_precise_errors(tools: StoryTools) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("editor", {"command": "view"}, "missing required argument 'path' for view"),
        ("editor", {"path": "a.py"}, "missing required argument 'command'"),
        ("editor", {"command": "view", "path": 5}, "'path' must be a string, got a number"),
        ("editor", {"command": "delete", "path": "a"}, "unknown command 'delete'; use one of"),
        ("editor", {"command": "create", "path": "a.py"}, "'file_text' for create"),
        (
            "editor",
            {"command": "create", "path": "a.py", "file_text": ["x"]},
            "'file_text' must be a string, got an array",
        ),
        (
            "editor",
            {"command": "create", "path": "a.py", "content": "x"},
            "unknown argument(s) 'content'; accepted: command, path",
        ),
        (
            "editor",
            {"command": "insert", "path": "notes.txt", "insert_line": "two", "new_str": "x"},
            "'insert_line' must be an integer, got a string",
        ),
        ("editor", {"command": "str_replace", "path": "notes.txt"}, "'old_str' for str_replace"),
        ("bash", {}, "missing required argument 'command'"),
        ("bash", {"command": "ls", "timeout": True}, "'timeout' must be a number of seconds"),
        ("finish", {}, "missing required argument 'summary'"),
        ("finish", {"summary": "  "}, "'summary' is empty"),
        ("shell", {"command": "ls"}, "unknown tool 'shell'; the tools are: bash, editor, finish"),
    ]
    for name, args, expected in cases:
        out = await tools.call(name, args)
        assert out.is_error, (name, args)
        assert out.content.startswith("error: ")
        assert expected in out.content, (expected, out.content)


async def test_finish_carries_the_summary(tools: StoryTools) -> None:
    out = await tools.call("finish", {"summary": " Added add(). "})
    assert out.finished == "Added add()." and not out.is_error


def test_cap_text_keeps_head_and_tail() -> None:
    text = "HEAD" + "m" * 50_000 + "TAIL"
    capped = cap_text(text)
    assert capped.startswith("HEAD") and capped.endswith("TAIL")
    assert len(capped) < MAX_OUTPUT + 100 and "characters not shown" in capped


# --- bash in the real sandbox -------------------------------------------------------------------


async def test_bash_runs_in_the_worktree_with_exit_code(sandbox: Sandbox, area: Area) -> None:
    (area.worktree / "hello.txt").write_text("hi from the repo\n")
    tools = StoryTools(area.worktree, sandbox)
    out = await tools.call("bash", {"command": "pwd; cat hello.txt; echo made > made.txt"})
    assert not out.is_error
    assert out.content.splitlines()[:2] == ["/workspace", "hi from the repo"]
    assert out.content.splitlines()[-1].startswith("[exit code 0;")
    assert (area.worktree / "made.txt").read_text() == "made\n"
    failed = await tools.call("bash", {"command": "echo oops >&2; exit 3"})
    assert "oops" in failed.content and "[exit code 3;" in failed.content
    # The editor sees what bash wrote, and bash sees what the editor wrote.
    await tools.call("editor", {"command": "create", "path": "e.txt", "file_text": "edited\n"})
    seen = await tools.call("bash", {"command": "cat e.txt"})
    assert seen.content.startswith("edited")


async def test_bash_output_is_capped_and_timeout_reported(sandbox: Sandbox, area: Area) -> None:
    tools = StoryTools(area.worktree, sandbox)
    out = await tools.call(
        "bash", {"command": "echo FIRST; seq 1 200000; echo LAST", "timeout": 20}
    )
    assert len(out.content) <= MAX_OUTPUT + 200
    assert out.content.startswith("FIRST") and "LAST\n[exit code 0;" in out.content
    slow = await tools.call("bash", {"command": "sleep 5", "timeout": 0.5})
    assert "[timed out after 0.5 s; the command was killed" in slow.content
    clamped = await tools.call("bash", {"command": "true", "timeout": 5000})
    assert clamped.content.startswith("(timeout lowered to the maximum, 600 s)")


async def test_bash_cannot_see_outside_the_worktree(sandbox: Sandbox, area: Area) -> None:
    tools = StoryTools(area.worktree, sandbox)
    out = await tools.call("bash", {"command": f"cat {area.key_file}"})
    assert "No such file or directory" in out.content
    assert "[exit code 1;" in out.content
