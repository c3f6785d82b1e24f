"""The pure part of landing: a listing against the base tree, and what is refused."""

from __future__ import annotations

import stat
from collections import Counter

import pytest

from runner.change import (
    GITLINK_MODE,
    Caps,
    Entry,
    Scan,
    TreeEntry,
    compute_change,
    name_problem,
    symlink_problem,
)
from runner.gitignore import IgnoreRules

FILE = stat.S_IFREG | 0o644
EXEC = stat.S_IFREG | 0o755
LINK = stat.S_IFLNK | 0o777
DIR = stat.S_IFDIR | 0o755


def file(sha: str, *, mode: int = FILE, size: int = 10, ino: int = 0, nlink: int = 1) -> Entry:
    return Entry("file", mode, size=size, nlink=nlink, dev=1, ino=ino, sha=sha)


def link(target: str) -> Entry:
    return Entry("symlink", LINK, sha="l" + target, target=target)


def listing(entries: dict[str, Entry] | None = None) -> Scan:
    found = Scan(entries=dict(entries or {}))
    found.links = Counter((e.dev, e.ino) for e in found.entries.values() if e.kind == "file")
    return found


BASE = {"a.py": TreeEntry("100644", "aaa"), "run.sh": TreeEntry("100755", "rrr")}


def test_added_modified_deleted_and_mode_changes() -> None:
    found = listing(
        {
            "a.py": file("a2", ino=1),
            "run.sh": file("rrr", mode=FILE, ino=2),
            "new.py": file("nnn", ino=3),
        }
    )
    change = compute_change(BASE, found)
    assert change.updates == {
        "a.py": TreeEntry("100644", "a2"),
        "run.sh": TreeEntry("100644", "rrr"),
        "new.py": TreeEntry("100644", "nnn"),
    }
    assert not change.refusals
    gone = compute_change(BASE, listing())
    assert gone.updates == {"a.py": None, "run.sh": None}


def test_an_unchanged_worktree_is_empty() -> None:
    found = listing()
    found.entries = {"a.py": file("aaa", ino=1), "run.sh": file("rrr", mode=EXEC, ino=2)}
    found.links = Counter({(1, 1): 1, (1, 2): 1})
    assert compute_change(BASE, found).empty


@pytest.mark.parametrize(
    ("path", "target", "escapes"),
    [
        ("l", "/etc/passwd", True),
        ("l", "../x", True),
        ("d/l", "../x", False),
        ("d/l", "../../x", True),
        ("l", "d/../../x", True),
        ("l", "a.py", False),
        ("l", "./d/./a.py", False),
        ("l", "", True),
    ],
)
def test_symlink_targets_are_resolved_lexically_and_through_links(
    path: str, target: str, escapes: bool
) -> None:
    assert (symlink_problem(path, target, {}) is not None) == escapes


def test_a_link_through_a_link_to_dot_escapes_like_the_kernel() -> None:
    links = {"self": "."}
    # Lexically `self/self/..` is the root; the kernel resolves `self` to the root first,
    # so `..` leaves the worktree.
    assert symlink_problem("l", "self/self/..", links) is not None
    assert symlink_problem("l", "self/self/a.py", links) is None
    loops = {"x": "y", "y": "x"}
    assert symlink_problem("l", "x", loops) is not None


@pytest.mark.parametrize(
    "name",
    [
        ".GIT",
        ".git ",
        ".git.",
        "git~1",
        ".Git::$INDEX_ALLOCATION",
        "a\nb",
        "a\\b",
        ".gitmodules",
        "GITMOD~1",
        ".g\u200cit",
        "\udcff",
    ],
)
def test_names_git_or_other_systems_refuse(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["git", ".gitignore", ".github", "a b", "naïve.txt", "x.git"])
def test_ordinary_names_pass(name: str) -> None:
    assert name_problem(name) is None


def test_refusals_cover_every_kind_and_say_what_to_do() -> None:
    found = listing(
        {
            "big": file("b", size=11 * 1024 * 1024, ino=4),
            "hard": file("h", ino=5, nlink=2),
            "out": link("../../etc"),
            "inside": link("ok.txt"),
            "ok.txt": file("o", ino=6),
        }
    )
    found.entries["pipe"] = Entry("fifo", stat.S_IFIFO | 0o644)
    found.entries[".github/workflows/ci.yml"] = file("w", ino=7)
    found.entries[".github"] = Entry("dir", DIR)
    found.entries["sub"] = Entry("dir", DIR)
    found.repo_markers = ["sub/.git"]
    found.unreadable = ["secret"]
    found.links[(1, 7)] = 1
    change = compute_change({}, found, Caps(max_file_bytes=10 * 1024 * 1024))
    kinds = {r.path: r.kind for r in change.refusals}
    assert kinds == {
        ".github/workflows/ci.yml": "workflow",
        "big": "size",
        "hard": "hardlink",
        "out": "symlink",
        "pipe": "special",
        "secret": "unreadable",
        "sub/.git": "nested_repo",
    }
    lines = "\n".join(r.line() for r in change.refusals)
    assert "rm -rf 'sub/.git'" in lines and "rm 'pipe'" in lines
    assert "11.0 MiB, over the 10.0 MiB cap" in lines
    assert "inside" in change.updates and "ok.txt" in change.updates


def test_a_hard_link_between_two_committed_files_is_fine() -> None:
    found = listing({"one": file("x", ino=9, nlink=2), "two": file("x", ino=9, nlink=2)})
    assert not compute_change({}, found).refusals


def test_submodules_stay_as_they_are() -> None:
    base = {"lib": TreeEntry(GITLINK_MODE, "c0ffee"), **BASE}
    found = listing()
    found.entries = {
        "a.py": file("aaa", ino=1),
        "run.sh": file("rrr", mode=EXEC, ino=2),
        "lib": Entry("dir", DIR),
    }
    found.links = Counter({(1, 1): 1, (1, 2): 1})
    assert compute_change(base, found).empty  # an empty directory: the gitlink is kept
    found.entries["lib/x.c"] = file("xc", ino=3)
    found.links[(1, 3)] = 1
    change = compute_change(base, found)
    assert [(r.path, r.kind) for r in change.refusals] == [("lib", "submodule")]
    del found.entries["lib"], found.entries["lib/x.c"]
    assert [r.kind for r in compute_change(base, found).refusals] == ["submodule"]


def test_symlinks_that_redirect_workflows_are_refused() -> None:
    for path in (".github", ".github/workflows", ".GitHub/Workflows/x.yml"):
        change = compute_change({}, listing({path: link("ci")}))
        assert [r.kind for r in change.refusals] == ["workflow"], path


def test_gitignore_rules_deepest_first_and_no_reinclusion_below_ignored_dirs() -> None:
    rules = IgnoreRules.root().enter("", b"*.log\n!keep.log\nbuild/\n/only-top\n")
    sub = rules.enter("sub", b"!debug.log\n")
    assert rules.ignored("x.log", is_dir=False)
    assert not rules.ignored("keep.log", is_dir=False)
    assert rules.ignored("build", is_dir=True) and not rules.ignored("build", is_dir=False)
    assert rules.ignored("only-top", is_dir=False)
    assert not rules.ignored("sub/only-top", is_dir=False)
    assert not sub.ignored("sub/debug.log", is_dir=False)
    assert sub.ignored("sub/other.log", is_dir=False)
    assert rules.ignored("pkg/__pycache__", is_dir=True)  # the runner's own excludes
    assert not rules.ignored("src/app.py", is_dir=False)
