from __future__ import annotations

from pathlib import Path

import pytest

from app.worker.repo_tools import MAX_OUTPUT, ReadOnlyRepo, ToolError


@pytest.fixture
def repo(tmp_path: Path) -> ReadOnlyRepo:
    root = tmp_path / "repo"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "README.md").write_text("# Demo\nA demo project.\n")
    (root / "src" / "pkg" / "core.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "src" / "pkg" / "cli.py").write_text("import argparse\n\nMAIN = 1\n")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02")
    secret = tmp_path / "secret.pem"
    secret.write_text("PRIVATE KEY add(")
    (root / "leak.py").symlink_to(secret)
    return ReadOnlyRepo(root)


def test_list_and_glob(repo: ReadOnlyRepo) -> None:
    listing = repo.list_files()
    assert "src/pkg/core.py" in listing and "README.md" in listing
    assert ".git" not in listing and "leak.py" not in listing
    assert repo.list_files("src", "**/*.py").splitlines() == ["src/pkg/cli.py", "src/pkg/core.py"]
    assert repo.list_files(".", "*.md") == "README.md"


def test_grep(repo: ReadOnlyRepo) -> None:
    assert repo.grep(r"def \w+") == "src/pkg/core.py:1: def add(a, b):"
    assert repo.grep("add\\(") == "src/pkg/core.py:1: def add(a, b):"  # not the symlink target
    assert repo.grep("nothing-here") == "(no matches)"
    with pytest.raises(ToolError, match="invalid regular expression"):
        repo.grep("(")


def test_view_ranges(repo: ReadOnlyRepo) -> None:
    assert repo.view("src/pkg/cli.py", 3, 3) == "    3  MAIN = 1"
    full = repo.view("src/pkg/core.py")
    assert full.splitlines()[0] == "    1  def add(a, b):"
    assert "src/pkg/" in repo.view("src")
    with pytest.raises(ToolError, match="past the end"):
        repo.view("src/pkg/cli.py", 99)
    with pytest.raises(ToolError, match="binary"):
        repo.view("blob.bin")


@pytest.mark.parametrize(
    "path", ["../secret.pem", "/etc/passwd", "src/../../secret.pem", "leak.py", ".git/config"]
)
def test_escapes_refused(repo: ReadOnlyRepo, path: str) -> None:
    with pytest.raises(ToolError):
        repo.view(path)


def test_absolute_paths_are_rooted(repo: ReadOnlyRepo) -> None:
    assert "Demo" in repo.view("/README.md")


def test_huge_output_capped(repo: ReadOnlyRepo) -> None:
    (repo.root / "big.txt").write_text("x" * 100 + "\n" * 10 + ("line\n" * 5000))
    out = repo.grep("line")
    assert len(out) < MAX_OUTPUT + 200


def test_dispatch_validates_arguments(repo: ReadOnlyRepo) -> None:
    assert "core.py" in repo.call("list_files", {"path": "src"})
    with pytest.raises(ToolError, match="missing argument"):
        repo.call("grep", {})
    with pytest.raises(ToolError, match="must be an integer"):
        repo.call("view", {"path": "README.md", "start_line": "1"})
    with pytest.raises(ToolError, match="unknown tool"):
        repo.call("rm", {"path": "."})
