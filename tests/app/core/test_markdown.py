"""`keep_ends`: the one head-and-tail clipper behind capped evidence and tool output."""

from __future__ import annotations

from app.core.markdown import keep_ends


def test_keep_ends_keeps_a_third_of_the_head_and_two_of_the_tail() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(100))
    clipped = keep_ends(text, 30, lambda n: f"<{n} gone>")
    assert clipped == f"{text[:10]}\n<70 gone>\n{text[-20:]}"


def test_keep_ends_leaves_short_text_alone() -> None:
    assert keep_ends("short", 5, lambda n: "never") == "short"
