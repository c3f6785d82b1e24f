"""One end-to-end scenario: the preamble every e2e test starts with, written once.

A repository with the App installed (and a maintainer who may write), an issue, the script
the planner and each story agent follow; then the label or the comment that starts a run, and
waits on what the bot does, none of which blocks the event loop.

    s = Scenario.new(world, models, f"Red story {t}")
    s.plans(plan).agent("S1", f"Right file {t}", always_wrong("s1.txt")).script()
    await s.label(bot)
    state = await s.ended(bot)
    assert s.requests("S1") ...

The turn and rule helpers below build the scripted model server's rules
(testbed/models/script.py): a story agent is matched on its kickoff, `Implement story S1:
<title>.`, the planner on its system prompt and the issue title.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from testbed.github.state import Issue, Repo
from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.e2e.conftest import DEFAULT_SCRIPT
from tests.e2e.harness import Bot, World, await_run, current, tracking

Turn = dict[str, Any]
Rule = dict[str, Any]


def tag() -> str:
    """A short random word that keeps one test's titles, rules and repos apart."""
    return uuid.uuid4().hex[:6]


# --- turns -----------------------------------------------------------------------------------


def _turn(name: str, arguments: dict[str, Any], usage: dict[str, int], latency: float) -> Turn:
    turn: Turn = {"tool_calls": [{"name": name, "arguments": arguments}], "usage": usage}
    if latency:
        turn["latency"] = latency
    return turn


def create(path: str, text: str, latency: float = 0.0) -> Turn:
    """The editor creates `path` holding `text`."""
    arguments = {"command": "create", "path": path, "file_text": text}
    return _turn("editor", arguments, {"input": 800, "output": 60}, latency)


def edit(path: str, old: str, new: str, latency: float = 0.0) -> Turn:
    """The editor replaces `old` with `new` in `path`."""
    arguments = {"command": "str_replace", "path": path, "old_str": old, "new_str": new}
    return _turn("editor", arguments, {"input": 800, "output": 60}, latency)


def finish(latency: float = 0.0) -> Turn:
    return _turn(
        "finish", {"summary": "Done."}, {"input": 900, "cached": 800, "output": 20}, latency
    )


def always_wrong(path: str) -> list[Turn | str]:
    """One attempt whose story test never passes: the file, then finish three times (the
    first finish and the two repairs it is allowed; the third red check fails the attempt)."""
    return [create(path, "wrong\n"), finish(), finish(), finish()]


# --- plans and rules -------------------------------------------------------------------------


def story(sid: str, title: str, deps: list[str], path: str, check: str) -> dict[str, Any]:
    """A light story that writes `path` and is green when `check` passes."""
    return {
        "id": sid,
        "title": title,
        "description": f"Create {path}.",
        "depends_on": deps,
        "writes": [path],
        "acceptance": [f"{path} exists"],
        "tests": [check],
        "tier": "light",
    }


def plan_of(*stories: dict[str, Any], summary: str = "Files.") -> dict[str, Any]:
    return {"summary": summary, "design_note": "Root files.", "stories": list(stories)}


def planner(issue_title: str, plan: dict[str, Any]) -> Rule:
    """The planner submits `plan` at once for the issue titled `issue_title`."""
    return {
        "name": f"plan {issue_title}",
        "match": {"system": "baro's planner", "first_user": issue_title},
        "turns": [{"tool_calls": [{"name": "submit_plan", "arguments": plan}]}],
    }


def agent(name: str, sid: str, title: str, turns: list[Turn | str]) -> Rule:
    """A story agent's rule, matched on the kickoff `Implement story S1: <title>.`."""
    return {
        "name": name,
        "match": {"first_user": f"Implement story {sid}: {title}"},
        "turns": turns,
    }


def use(models: RunningModelServer, *rules: Rule) -> None:
    """Load `rules` (first match wins) ahead of the default planner."""
    models.set_script({"rules": [*rules, *DEFAULT_SCRIPT["rules"]]})


def kickoffs(requests: list[Any]) -> list[str]:
    """The first user message of each conversation (one per attempt), in order."""
    return [r.body["messages"][1]["content"] for r in requests if r.turn == 0]


def git_log(repo: Repo, branch: str) -> list[str]:
    """`subject\\0body` of each commit on `branch`, newest first."""
    out = subprocess.run(
        ["git", "--git-dir", str(repo.git_dir), "log", "--format=%s%x00%b%x1e", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [entry.strip() for entry in out.split("\x1e") if entry.strip()]


def subjects(repo: Repo, branch: str) -> list[str]:
    return [entry.split("\x00")[0] for entry in git_log(repo, branch)]


# --- the scenario ----------------------------------------------------------------------------


@dataclass
class Scenario:
    """A repository and an issue of one test, and the rules its run follows."""

    world: World
    models: RunningModelServer
    repo: Repo
    issue: Issue
    title: str
    rules: list[Rule] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    """Agent key (the story id unless named otherwise) → its rule's name in the script."""

    @classmethod
    def new(
        cls,
        world: World,
        models: RunningModelServer,
        title: str,
        files: dict[str, str | bytes] | None = None,
        body: str = "",
    ) -> Scenario:
        """A new repository (`files`, or the default calc.py one) and an issue titled `title`."""
        repo = world.new_repo(files)
        return cls(world, models, repo, world.new_issue(repo, title, body), title)

    @property
    def number(self) -> int:
        return self.issue.number

    # scripting

    def plans(self, plan: dict[str, Any]) -> Scenario:
        """The planner answers this issue with `plan`."""
        self.rules.append(planner(self.title, plan))
        return self

    def agent_rule(
        self, sid: str, title: str, turns: list[Turn | str], key: str | None = None
    ) -> Rule:
        """Story `sid` titled `title` takes `turns`; `key` (default `sid`) names the rule
        for `requests`. Returned, not added: for rules that go first (`script(*first)`)."""
        key = key or sid
        self.names[key] = f"{key} {self.title}"
        return agent(self.names[key], sid, title, turns)

    def agent(
        self, sid: str, title: str, turns: list[Turn | str], key: str | None = None
    ) -> Scenario:
        self.rules.append(self.agent_rule(sid, title, turns, key))
        return self

    def rule(self, *rules: Rule) -> Scenario:
        """Rules of any other shape (a reviewer, a planner that explores first, a fault)."""
        self.rules.extend(rules)
        return self

    def script(self, *first: Rule, defaults: bool = True) -> Scenario:
        """Load the rules into the model server: `first` ahead of the others (the first
        matching rule wins), the default planner last unless `defaults` is off."""
        tail = DEFAULT_SCRIPT["rules"] if defaults else []
        self.models.set_script({"rules": [*first, *self.rules, *tail]})
        return self

    # driving

    async def label(self, bot: Bot, **kwargs: Any) -> httpx.Response:
        """The maintainer labels the issue `baro` (see `World.deliver_label`)."""
        return await self.world.deliver_label(bot, self.repo, self.number, **kwargs)

    async def comment(
        self, bot: Bot, body: str, number: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A comment on the issue (or on `number`, a pull request of the repository)."""
        return await self.world.deliver_comment(
            bot, self.repo, number or self.number, body, **kwargs
        )

    # observing

    def run(self, bot: Bot, number: int | None = None) -> dict[str, Any] | None:
        """The run record behind the tracking comment, if there is one yet."""
        return current(self.world, bot, self.repo, number or self.number)

    async def ended(
        self,
        bot: Bot,
        check: Callable[[dict[str, Any]], Any] | None = None,
        timeout: float = 90,
        what: str = "the run to end",
        number: int | None = None,
    ) -> dict[str, Any]:
        """The run record once `check(state)` holds (default: the run ended)."""
        return await await_run(
            self.world, bot, self.repo, number or self.number, check, timeout, what
        )

    def requests(self, key: str) -> list[Any]:
        """What the model server was sent under agent `key`'s rule (or a rule so named)."""
        name = self.names.get(key, key)
        return [r for r in self.models.requests if r.rule == name]

    async def sent(self, key: str, timeout: float = 60) -> list[Any]:
        """The requests of agent `key` once there is one (its first model turn began)."""
        return await wait_for(lambda: self.requests(key), timeout, f"{key}'s first model turn")

    async def comment_says(self, text: str, number: int | None = None, timeout: float = 15) -> Any:
        """The tracking comment once it contains `text`."""
        where = number or self.number
        return await wait_for(
            lambda: (c := tracking(self.world, self.repo, where)) and text in c.body and c,
            timeout,
            f"the tracking comment to say {text!r}",
        )

    async def reply_says(self, text: str, number: int | None = None, timeout: float = 20) -> Any:
        """The first comment of the bot on the issue (or `number`) containing `text`."""
        where = number or self.number
        return await wait_for(
            lambda: next(
                (c for c in self.world.bot_comments(self.repo, where) if text in c.body), None
            ),
            timeout,
            f"a reply saying {text!r}",
        )

    async def labels_once(self, label: str, number: int | None = None) -> list[str]:
        """The issue's labels once `label` is on it (labels follow the run's final state)."""
        where = number or self.number
        found: list[str] = await wait_for(
            lambda: (
                (labels := self.world.state.labels(self.repo, where)) and label in labels and labels
            ),
            15,
            f"the {label} label",
        )
        return found

    def subjects(self, branch: str) -> list[str]:
        return subjects(self.repo, branch)
