"""Short replies the bot posts (pure). Each carries a hidden marker so it is posted once."""

from __future__ import annotations

from app.commands import HELP_LINES


def reply_marker(delivery_id: str) -> str:
    return f"<!-- baro:reply:{delivery_id} -->"


def help_text() -> str:
    rows = "\n".join(f"| `{usage}` | {meaning} |" for usage, meaning in HELP_LINES)
    return (
        "**baro** turns this issue into a pull request: it plans the work as small stories, "
        "runs them in parallel and opens one PR.\n\n"
        "| command | what it does |\n|---|---|\n"
        f"{rows}\n\n"
        "Commands are read from the first line of a new comment. Only people with write "
        "access to the repository can use them."
    )


def with_marker(marker: str, text: str) -> str:
    return f"{marker}\n{text}"


def permission_denied(login: str, permission: str, label: str) -> str:
    return (
        f"Hi @{login}, thanks for the interest! baro only starts for people with write access "
        f"to this repository (yours is `{permission}`). A maintainer can start it by adding "
        f"the `{label}` label or commenting `/baro`."
    )


def invalid_command(error: str) -> str:
    return f"I could not read that command: {error}\n\n{help_text()}"


def already_running(run_id: str, comment_url: str | None) -> str:
    where = f" ([progress]({comment_url}))" if comment_url else ""
    return (
        f"A baro run is already active on this issue (`{run_id}`){where}. "
        "Wait for it to finish, or comment `/baro cancel` to stop it first."
    )


def no_run(verb: str) -> str:
    return (
        f"There is no baro run on this issue to {verb}. Comment `/baro` to start one, "
        "or `/baro plan` to see a plan first."
    )


def queued(requester: str, trigger: str, plan_only: bool) -> str:
    how = "added the label" if trigger == "label" else "asked"
    what = "plan this issue and wait for approval" if plan_only else "plan and run this issue"
    return (
        f"👀 **baro is on it.** @{requester} {how}; I will {what}.\n\n"
        "- [ ] Planning — queued\n\n"
        "This comment is updated as the run progresses. `/baro cancel` stops it; "
        "`/baro help` lists the commands."
    )


def status(run_id: str, state: str) -> str:
    return f"Run `{run_id}` is **{state}**."


def not_yet(verb: str) -> str:
    return f"`/baro {verb}` has nothing to act on while the run is still being planned."
