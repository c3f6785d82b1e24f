"""A story's change as git tree entries, and what in it may not be committed (pure).

The runner reads the worktree itself (`runner.scan`) and turns that listing into the tree
it commits, so host git never walks what a story agent left behind. Before anything is
committed the change is checked here; every refusal names the path, says why and what to do,
and goes back to the agent while it can still undo it.
"""

from __future__ import annotations

import posixpath
import stat
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["file", "dir", "symlink", "fifo", "socket", "device", "other"]
RefusalKind = Literal[
    "nested_repo",
    "submodule",
    "symlink",
    "hardlink",
    "special",
    "size",
    "name",
    "workflow",
    "unreadable",
]

FILE_MODE = "100644"
EXECUTABLE_MODE = "100755"
SYMLINK_MODE = "120000"
GITLINK_MODE = "160000"
WORKFLOWS_DIR = ".github/workflows"
SYMLINK_DEPTH = 40
"""Links followed while resolving one symlink, as the kernel's ELOOP limit."""

_HFS_IGNORABLE = dict.fromkeys(
    [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)


def kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


@dataclass(frozen=True, slots=True)
class Entry:
    """One path as `lstat` saw it; `sha` is the blob id of a file's bytes or a link's target."""

    kind: Kind
    mode: int
    size: int = 0
    nlink: int = 1
    dev: int = 0
    ino: int = 0
    sha: str | None = None
    target: str | None = None

    @property
    def git_mode(self) -> str | None:
        if self.kind == "file":
            return EXECUTABLE_MODE if self.mode & 0o100 else FILE_MODE
        if self.kind == "symlink":
            return SYMLINK_MODE
        return None


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a git tree: mode as git writes it, and the object id."""

    mode: str
    sha: str


@dataclass
class Scan:
    """What the runner found in a worktree (ignored paths left out, except for link counts)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    repo_markers: list[str] = field(default_factory=list)
    """`.git` entries (a nested repository, or a planted `.git` file); never descended."""
    unreadable: list[str] = field(default_factory=list)
    links: Counter[tuple[int, int]] = field(default_factory=Counter)
    """(dev, ino) of every regular file seen, ignored ones included: hard links inside."""


@dataclass(frozen=True)
class Refusal:
    path: str
    kind: RefusalKind
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Change:
    """The tree edits that turn `base` into the worktree: path → new entry, None = deleted."""

    updates: dict[str, TreeEntry | None]
    refusals: tuple[Refusal, ...] = ()

    @property
    def paths(self) -> list[str]:
        return sorted(self.updates)

    @property
    def empty(self) -> bool:
        return not self.updates


@dataclass(frozen=True)
class Caps:
    max_file_bytes: int = 10 * 1024 * 1024


def compute_change(base: Mapping[str, TreeEntry], scan: Scan, caps: Caps | None = None) -> Change:
    """Compare the base tree with the scan; refusals cover everything that cannot go in."""
    caps = caps or Caps()
    updates: dict[str, TreeEntry | None] = {}
    refusals: list[Refusal] = []
    gitlinks = {path for path, entry in base.items() if entry.mode == GITLINK_MODE}

    for path, tree_entry in base.items():
        if tree_entry.mode == GITLINK_MODE:
            continue
        seen = scan.entries.get(path)
        if seen is None or seen.git_mode is None:
            updates[path] = None
    for gitlink in sorted(gitlinks):
        refusal = _gitlink_refusal(gitlink, scan)
        if refusal is not None:
            refusals.append(refusal)

    links = _symlink_targets(scan)
    for path, entry in scan.entries.items():
        if entry.kind == "dir":
            continue
        old = base.get(path)
        new = _tree_entry(entry)
        if new is not None and old == new:
            continue
        refusal = _refusal(path, entry, scan, links, caps)
        if refusal is not None:
            refusals.append(refusal)
            continue
        if new is None:
            continue
        if _under(path, gitlinks):
            continue  # reported once per submodule above
        updates[path] = new
    for marker in scan.repo_markers:
        refusals.append(
            Refusal(
                marker,
                "nested_repo",
                "a nested git repository (or a planted .git entry) cannot be committed: "
                f"delete it (`rm -rf {_shell_quote(marker)}`) and keep the files as plain files",
            )
        )
    for path in scan.unreadable:
        refusals.append(
            Refusal(path, "unreadable", "cannot be read by baro; give it read permission")
        )
    refusals += _workflow_refusals(updates)
    refusals.sort(key=lambda r: (r.path, r.kind))
    return Change(updates, tuple(refusals))


def _tree_entry(entry: Entry) -> TreeEntry | None:
    mode = entry.git_mode
    if mode is None or entry.sha is None:
        return None
    return TreeEntry(mode, entry.sha)


def _refusal(
    path: str, entry: Entry, scan: Scan, links: Mapping[str, str], caps: Caps
) -> Refusal | None:
    problem = path_problem(path)
    if problem is not None:
        kind, reason = problem
        return Refusal(path, kind, reason)
    if entry.kind in ("fifo", "socket", "device", "other"):
        what = {"fifo": "a FIFO", "socket": "a socket", "device": "a device node"}.get(
            entry.kind, "a special file"
        )
        return Refusal(
            path,
            "special",
            f"is {what}; only regular files, directories and symlinks can be committed "
            f"(remove it: `rm {_shell_quote(path)}`)",
        )
    if entry.kind == "file":
        if entry.size > caps.max_file_bytes:
            return Refusal(
                path,
                "size",
                f"is {_mib(entry.size)}, over the {_mib(caps.max_file_bytes)} cap for one "
                "file; remove it or generate it at build time",
            )
        if entry.nlink > scan.links[(entry.dev, entry.ino)]:
            return Refusal(
                path,
                "hardlink",
                "is a hard link to a file outside the repository's committed files; "
                "replace it with a copy (`cp --remove-destination`)",
            )
        if entry.sha is None:
            return Refusal(path, "unreadable", "cannot be read by baro; give it read permission")
    if entry.kind == "symlink":
        assert entry.target is not None
        problem_text = symlink_problem(path, entry.target, links)
        if problem_text is not None:
            return Refusal(path, "symlink", problem_text)
        if _is_workflow_container(path):
            return Refusal(
                path,
                "workflow",
                "a symlink here would redirect .github/workflows, which baro's GitHub App "
                "has no permission to change; remove the symlink",
            )
    return None


def _gitlink_refusal(gitlink: str, scan: Scan) -> Refusal | None:
    seen = scan.entries.get(gitlink)
    inside = any(_under(path, {gitlink}) for path in scan.entries)
    if seen is not None and seen.kind == "dir" and not inside:
        return None
    return Refusal(
        gitlink,
        "submodule",
        "is a submodule of the repository; baro does not change submodules (restore it as "
        "an empty directory and put the change elsewhere)",
    )


def _workflow_refusals(updates: Mapping[str, TreeEntry | None]) -> list[Refusal]:
    refused = []
    for path in sorted(updates):
        if _in_workflows(path):
            refused.append(
                Refusal(
                    path,
                    "workflow",
                    "baro's GitHub App has no workflows permission, so changes under "
                    ".github/workflows/ cannot be pushed; undo this change (restore or delete "
                    "the file) and describe the needed workflow change in your summary instead",
                )
            )
    return refused


def _in_workflows(path: str) -> bool:
    return path.casefold().startswith(WORKFLOWS_DIR + "/")


def _is_workflow_container(path: str) -> bool:
    folded = path.casefold()
    return folded in (".github", WORKFLOWS_DIR) or _in_workflows(path)


def _under(path: str, dirs: Iterable[str]) -> bool:
    return any(path.startswith(d + "/") for d in dirs)


# --- names -------------------------------------------------------------------------------


def path_problem(path: str) -> tuple[RefusalKind, str] | None:
    """Why git (or a checkout on Windows or macOS) would refuse `path`, if it would."""
    for part in path.split("/"):
        problem = name_problem(part)
        if problem is not None:
            return problem
    return None


def name_problem(name: str) -> tuple[RefusalKind, str] | None:
    if name in ("", ".", ".."):
        return "name", "has an empty, '.' or '..' component"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "name", "has a name that is not valid UTF-8; rename it"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "name", "has control characters (such as a newline) in its name; rename it"
    if "\\" in name:
        return "name", "has a backslash in its name, which git refuses (NTFS); rename it"
    folded = name.translate(_HFS_IGNORABLE).rstrip(" .").casefold()
    if folded == ".git" or folded.startswith("git~") or folded.startswith(".git:"):
        return "name", "has a name git treats as .git on some systems; rename it"
    if folded == ".gitmodules" or folded.startswith("gitmod~"):
        return (
            "submodule",
            "adds submodule configuration (.gitmodules); baro does not add submodules",
        )
    return None


# --- symlinks ----------------------------------------------------------------------------


def _symlink_targets(scan: Scan) -> dict[str, str]:
    return {
        path: entry.target
        for path, entry in scan.entries.items()
        if entry.kind == "symlink" and entry.target is not None
    }


def symlink_problem(path: str, target: str, links: Mapping[str, str]) -> str | None:
    """Why the link at `path` → `target` leaves the worktree, following the worktree's own
    links as the kernel would (`a/..` after a link `a` goes to the link target's parent)."""
    if not target:
        return "is a symlink with an empty target; remove it"
    if target.startswith("/"):
        return (
            "is a symlink to an absolute path, which points outside the repository; "
            "use a relative target inside the repository or copy the file"
        )
    parts = posixpath.dirname(path).split("/") if "/" in path else []
    if _resolve(parts, target, links, depth=0) is None:
        return (
            "is a symlink that points outside the repository; use a relative target that "
            "stays inside it, or copy the file"
        )
    return None


def _resolve(
    start: list[str], target: str, links: Mapping[str, str], depth: int
) -> list[str] | None:
    """The components `target` resolves to from directory `start`; None if it escapes."""
    if depth > SYMLINK_DEPTH or target.startswith("/"):
        return None
    stack = list(start)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        here = "/".join(stack)
        inner = links.get(here)
        if inner is not None:
            resolved = _resolve(stack[:-1], inner, links, depth + 1)
            if resolved is None:
                return None
            stack = resolved
    return stack


# --- text --------------------------------------------------------------------------------


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _shell_quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def summary(refusals: Iterable[Refusal]) -> str:
    return "\n".join(f"- {r.line()}" for r in refusals)


__all__ = [
    "EXECUTABLE_MODE",
    "FILE_MODE",
    "GITLINK_MODE",
    "SYMLINK_MODE",
    "Caps",
    "Change",
    "Entry",
    "Kind",
    "Refusal",
    "RefusalKind",
    "Scan",
    "TreeEntry",
    "compute_change",
    "kind_of",
    "name_problem",
    "path_problem",
    "summary",
    "symlink_problem",
]
