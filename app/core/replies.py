"""Short replies the bot posts (pure). Each carries a hidden marker so it is posted once."""

from __future__ import annotations

from app.core.markdown import escape_inline
from app.core.report import render_help


def reply_marker(delivery_id: str) -> str:
    return f"<!-- baro:reply:{delivery_id} -->"


def with_marker(marker: str, text: str) -> str:
    return f"{marker}\n{text}"


def permission_denied(login: str, permission: str, label: str) -> str:
    return (
        f"Hi @{login}, thanks for the interest! baro only starts for people with write access "
        f"to this repository (yours is `{permission}`). A maintainer can start it by adding "
        f"the `{label}` label or commenting `/baro`."
    )


def invalid_command(error: str) -> str:
    return f"I could not read that command: {error}\n\n{render_help()}"


def already_running(run_id: str, comment_url: str | None) -> str:
    where = f" ([progress]({comment_url}))" if comment_url else ""
    return (
        f"A baro run is already active on this issue (`{run_id}`){where}. "
        "Wait for it to finish, or comment `/baro cancel` to stop it first."
    )


def branch_busy(branch: str, run_id: str, comment_url: str | None) -> str:
    where = f" ([progress]({comment_url}))" if comment_url else ""
    return (
        f"Another baro run (`{run_id}`){where} is still adding commits to "
        f"`{escape_inline(branch, 120)}`. Two runs on one branch would step on each other: "
        "comment again when it has finished, or `/baro cancel` it where it runs."
    )


def no_run(verb: str) -> str:
    return (
        f"There is no baro run on this issue to {verb}. Comment `/baro` to start one, "
        "or `/baro plan` to see a plan first."
    )


def status(run_id: str, state: str) -> str:
    return f"Run `{run_id}` is **{state}**."


def not_yet(verb: str, state: str) -> str:
    if verb == "approve" and state in ("ready", "running"):
        return "This run is already approved."
    return f"`/baro {verb}` cannot act on this run while it is {state}."


def cancelled(run_id: str) -> str:
    return (
        f"Run `{run_id}` is cancelled: no new stories start, running ones stop at their next "
        "step, and the branch is kept. `/baro retry` continues it; `/baro` starts afresh."
    )


def not_on_pull_requests() -> str:
    return (
        "baro starts runs from issues: comment `/baro` (or add the label) on the issue this "
        "pull request is about. On a pull request baro opened, `/baro <instructions>` starts "
        "a follow-up run on its branch."
    )


def follow_up_on_closed(branch: str) -> str:
    return (
        f"This pull request is closed, so a follow-up run has nowhere to go (its branch was "
        f"`{escape_inline(branch, 120)}`). Reopen it, or comment `/baro` on the issue for a "
        "new run."
    )


def follow_up_needs_instructions() -> str:
    return (
        "Tell me what to change: `/baro <instructions>` on this pull request plans and runs "
        "just that on its branch, for example `/baro add type hints to the new module`."
    )
