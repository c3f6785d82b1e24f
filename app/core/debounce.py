"""How long the tracking comment (and the check run beside it) waits between edits.

The first edits of a run come quickly, so a maintainer watching sees the plan start; the
window then doubles per edit up to a cap, so a long run costs a few dozen edits, not one per
story event: GitHub allows an installation 500 content-creating requests an hour, and every
edit is one for the comment and up to two for the check run.
"""

from __future__ import annotations


def edit_window(base: float, cap: float, edits: int) -> float:
    """The window after `edits` debounced edits: base, 2 × base, 4 × base … at most `cap`
    (never below base; 0 turns debouncing off)."""
    if base <= 0:
        return 0.0
    return max(base, min(cap, base * (1 << min(edits, 30))))
