"""Which paths of a worktree are ignored, by git's rules, decided without running git there.

The runner lists a worktree itself (`runner.scan`) instead of letting host git walk it, so
it also applies `.gitignore` itself: each directory's `.gitignore` (as the agent left it,
exactly as git would read it) is parsed with `pathspec`'s git-compatible matcher, the
deepest file with a matching pattern decides, and below an ignored directory nothing is
re-included. Tracked paths are never ignored (git keeps tracking them); the scanner handles
that, since only it knows the base tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pathspec import GitIgnoreSpec

#: Build and tool caches that running tests leaves behind; never part of a story's commit,
#: whatever the repository's own .gitignore says.
DEFAULT_EXCLUDES = (
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".coverage",
    ".DS_Store",
)
GITIGNORE_MAX_BYTES = 1024 * 1024
"""A larger `.gitignore` is read up to this size (git has no limit; nothing real is near it)."""


@dataclass(frozen=True)
class _Level:
    prefix: str  # "" for the root, else "dir/sub/"
    spec: GitIgnoreSpec


class IgnoreRules:
    """An immutable stack of `.gitignore` levels; `enter` returns the stack one level deeper."""

    def __init__(self, levels: tuple[_Level, ...]) -> None:
        self._levels = levels

    @classmethod
    def root(cls, extra: Iterable[str] = DEFAULT_EXCLUDES) -> IgnoreRules:
        """The repository-wide excludes (git's `info/exclude`), below every `.gitignore`."""
        return cls((_Level("", GitIgnoreSpec.from_lines(list(extra))),))

    def enter(self, directory: str, gitignore: bytes | None) -> IgnoreRules:
        """The rules inside `directory` ("" for the root), given its `.gitignore` bytes."""
        if not gitignore:
            return self
        text = gitignore[:GITIGNORE_MAX_BYTES].decode("utf-8", errors="replace")
        spec = GitIgnoreSpec.from_lines(text.splitlines())
        prefix = f"{directory}/" if directory else ""
        return IgnoreRules((*self._levels, _Level(prefix, spec)))

    def ignored(self, path: str, *, is_dir: bool) -> bool:
        """Whether `path` (relative to the worktree root) is excluded by the closest rule."""
        for level in reversed(self._levels):
            if level.prefix and not path.startswith(level.prefix):
                continue
            relative = path[len(level.prefix) :]
            if is_dir:
                relative += "/"
            decided = level.spec.check_file(relative).include
            if decided is not None:
                return decided
        return False


__all__ = ["DEFAULT_EXCLUDES", "IgnoreRules"]
