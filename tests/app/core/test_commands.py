from __future__ import annotations

import pytest

from app.core.commands import Command, CommandError, parse_command


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/baro", Command("run")),
        ("  /baro  ", Command("run")),
        ("/BARO", Command("run")),
        ("/baro add a --json flag", Command("run", instructions="add a --json flag")),
        ("/baro\nplease keep it small", Command("run", instructions="please keep it small")),
        ("/baro plan", Command("plan")),
        ("/baro plan only touch cli.py", Command("plan", instructions="only touch cli.py")),
        ("/baro approve", Command("approve")),
        ("/baro Approve", Command("approve")),
        ("/baro cancel", Command("cancel")),
        ("/baro status", Command("status")),
        ("/baro help", Command("help")),
        ("/baro retry", Command("retry")),
        ("/baro retry S3 s5", Command("retry", stories=("S3", "S5"))),
        ("/baro retry S3, S3,S5", Command("retry", stories=("S3", "S5"))),
        ("/baro planning ahead", Command("run", instructions="planning ahead")),
        ("\ufeff/baro status", Command("status")),
    ],
)
def test_parses_commands(body: str, expected: Command) -> None:
    assert parse_command(body) == expected


@pytest.mark.parametrize(
    "body",
    ["", "hello", "/barometer", "please /baro", "x\n/baro", "`/baro`", "/bar o", "/baro-plan"],
)
def test_non_commands(body: str) -> None:
    assert parse_command(body) is None


@pytest.mark.parametrize(
    "body", ["/baro retry all", "/baro retry S0", "/baro retry 3", "/baro retry S3; rm"]
)
def test_bad_retry_arguments(body: str) -> None:
    with pytest.raises(CommandError, match="story ids like S3"):
        parse_command(body)


def test_only_first_line_is_the_command() -> None:
    assert parse_command("/baro status\n/baro cancel") == Command("status")


def test_hostile_text_is_plain_instructions() -> None:
    cmd = parse_command("/baro $(rm -rf /) `curl evil` <!-- x -->")
    assert cmd is not None and cmd.verb == "run"
    assert cmd.instructions == "$(rm -rf /) `curl evil` <!-- x -->"
