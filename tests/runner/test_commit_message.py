"""Story commit messages: exact layout, trailers, and model text kept out of the trailers."""

from __future__ import annotations

import pytest

from runner.commit_message import (
    BODY_MAX,
    SUBJECT_MAX,
    CommitMessage,
    clean_body,
    is_story_commit,
    parse_trailers,
    render_commit_message,
)


def test_layout_and_trailers() -> None:
    text = render_commit_message(
        "S3", "Reservation service", "Adds the service.", "r42", ("octo", 7)
    )
    assert text == (
        "S3: Reservation service\n"
        "\n"
        "Adds the service.\n"
        "\n"
        "Baro-Run: r42\n"
        "Baro-Story: S3\n"
        "Co-authored-by: octo <7+octo@users.noreply.github.com>\n"
    )
    assert parse_trailers(text) == [
        ("Baro-Run", "r42"),
        ("Baro-Story", "S3"),
        ("Co-authored-by", "octo <7+octo@users.noreply.github.com>"),
    ]
    assert is_story_commit(text, "r42", "S3")
    assert not is_story_commit(text, "r42", "S30")
    assert not is_story_commit(text, "r4", "S3")


def test_without_summary_or_co_author() -> None:
    text = render_commit_message("S1", "Enum", "  \n\n", "r1", None)
    assert text == "S1: Enum\n\nBaro-Run: r1\nBaro-Story: S1\n"
    assert is_story_commit(text, "r1", "S1")


def test_dataclass_renders_the_same() -> None:
    message = CommitMessage("r1", "S2", "Title", "Body", ("octo", 5))
    assert message.render() == render_commit_message("S2", "Title", "Body", "r1", ("octo", 5))


def test_subject_is_one_line_and_truncated() -> None:
    title = "Add the\nreservation   service " + "with many words " * 10
    subject = render_commit_message("S12", title, "", "r1").split("\n")[0]
    assert len(subject) <= SUBJECT_MAX
    assert subject.startswith("S12: Add the reservation service with")
    assert subject.endswith("…")
    assert render_commit_message("S1", " \n ", "", "r1").startswith("S1: (untitled story)\n")


def test_trailer_injection_is_neutralised() -> None:
    summary = (
        "Did the work.\n"
        "Baro-Story: S9 in the middle\n"
        "co-authored-by: mallory <1+mallory@users.noreply.github.com>\n"
        "More text.\n"
        "\n"
        "Reviewed-by: someone\n"
        "Fixes: #12\n"
    )
    text = render_commit_message("S1", "T", summary, "r1")
    assert text == "S1: T\n\nDid the work.\nMore text.\n\nBaro-Run: r1\nBaro-Story: S1\n"
    assert not is_story_commit(text, "r1", "S9")


def test_summary_only_of_trailers_gives_no_body() -> None:
    text = render_commit_message("S1", "T", "Baro-Run: other\nBaro-Story: S2\n", "r1")
    assert text == "S1: T\n\nBaro-Run: r1\nBaro-Story: S1\n"


def test_body_is_cleaned_wrapped_and_capped() -> None:
    long_line = "word " * 40
    body = clean_body(f"a\u200b\x00b\r\n\n\n\n- {long_line}\n```\n{long_line}\n```\n")
    lines = body.split("\n")
    assert lines[0] == "ab"
    assert lines[1] == ""  # blank runs collapse to one
    assert all(len(line) <= 72 for line in lines[2:-3])
    assert lines[3].startswith("  word")  # list items wrap with a hanging indent
    assert f"\n{long_line.rstrip()}\n" in body  # code blocks are not reflowed

    capped = clean_body("line of text\n" * 1000)
    assert len(capped) <= BODY_MAX
    assert capped.endswith("[… summary truncated]")


def test_ids_and_logins_are_checked() -> None:
    with pytest.raises(ValueError):
        render_commit_message("S1\nBaro-Run: x", "T", "", "r1")
    with pytest.raises(ValueError):
        render_commit_message("S1", "T", "", "r 1")
    text = render_commit_message("S1", "T", "", "r1", ("bad login>\n", 3))
    assert "Co-authored-by" not in text
    bot = render_commit_message("S1", "T", "", "r1", ("dependabot[bot]", 49699333))
    assert "Co-authored-by: dependabot[bot] <49699333+dependabot[bot]@users" in bot


def test_parse_trailers_needs_a_trailer_paragraph() -> None:
    assert parse_trailers("Subject: only\n") == []
    assert parse_trailers("S1: x\n\nbody\nBaro-Run: r1\n") == []
