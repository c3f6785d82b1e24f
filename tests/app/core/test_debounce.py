from __future__ import annotations

from app.core.debounce import edit_window


def test_the_window_doubles_per_edit_up_to_the_cap() -> None:
    assert [edit_window(3, 30, n) for n in range(6)] == [3, 6, 12, 24, 30, 30]


def test_a_cap_below_the_base_never_shrinks_the_window() -> None:
    assert edit_window(5, 2, 0) == 5
    assert edit_window(5, 2, 4) == 5


def test_zero_turns_debouncing_off_and_huge_counts_do_not_overflow() -> None:
    assert edit_window(0, 30, 3) == 0
    assert edit_window(3, 30, 10**9) == 30
