"""The story agent: a tool loop on a cheap model, verified before it may land.

`StoryAgent.work` runs the conversation until the model calls `finish`, then runs the
story's tests and the repository's verification commands in the sandbox; failures go back
into the same conversation (bounded). The conversation is kept, so `resolve_conflict` can
continue it when landing hits merge conflicts. A budget (rounds, tokens, dollars) bounds
everything; model errors, cancellation and budget end the story with a typed reason.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.llm.client import ModelClient
from app.llm.errors import FatalError, ModelError, RetryableError
from app.llm.meter import Pricer, UsageMeter
from app.llm.types import AssistantTurn, Conversation, ToolCall, ToolSpec, Usage
from runner.process import CommandResult
from runner.prompts import (
    CheckFailure,
    StoryBrief,
    conflict_message,
    first_message,
    markers_left_message,
    nudge_message,
    refused_message,
    system_prompt,
    verification_failed_message,
)
from runner.sandbox import CommandSandbox
from runner.tool_args import cap_text
from runner.tools import StoryTools, ToolOutcome

__all__ = [
    "AgentResult",
    "FailReason",
    "PrecommitCheck",
    "Pricer",
    "StopCheck",
    "StoryAgent",
    "StoryBrief",
    "StoryBudget",
    "VerifyResult",
    "story_test_command",
]

log = logging.getLogger(__name__)

FailReason = Literal[
    "budget",
    "model_fatal",
    "model_unavailable",
    "verification",
    "no_finish",
    "cancelled",
    "conflict",
    "refused",
    "engine",
]
StopCheck = Callable[[], Awaitable[bool]]
PrecommitCheck = Callable[[], Awaitable[list[str]]]
BeforeVerify = Callable[[], Awaitable[list["VerifyResult"]]]
"""Runs before the checks (setup again after a lock file changed); failed results it
returns are the verification's outcome."""
"""What in the worktree baro would refuse to commit, one line each (empty: all fine)."""

EVIDENCE_ITEMS = 6
EVIDENCE_CHARS = 2_000
VERIFY_TAIL_CHARS = 4_000
COMMAND_NOT_FOUND = 127


@dataclass(frozen=True)
class StoryBudget:
    max_rounds: int = 40
    """Model calls for `work`, verification repairs included."""
    max_tokens: int = 2_000_000
    """Prompt plus output tokens over the whole story (every call counts its whole prompt)."""
    max_cost_usd: Decimal = Decimal("1.00")
    verify_rounds: int = 2
    """Times a failed verification goes back to the agent before the story fails."""
    conflict_rounds: int = 2
    """Calls of `resolve_conflict` the agent accepts."""
    conflict_max_rounds: int = 15
    """Model calls per conflict resolution."""
    verify_timeout_s: float = 600.0


class VerifyResult(BaseModel):
    """One verification command after `finish`."""

    model_config = ConfigDict(frozen=True)

    command: str
    source: Literal["story", "repository"]
    exit_code: int | None
    timed_out: bool = False
    duration_s: float = 0.0
    passed: bool
    output_tail: str = ""
    environment: str = ""
    """Where it ran (`image node:22`, the default environment): named when a command is
    not found there."""

    @property
    def status(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f} s"
        if self.exit_code == COMMAND_NOT_FOUND:
            where = f" in {self.environment}" if self.environment else ""
            return f"command not found{where} (exit 127): `{self.command}`"
        return f"exit code {self.exit_code} ({self.duration_s:.1f} s)"


class AgentResult(BaseModel):
    """How a story attempt ended. `cost` is None when any call's price is unknown."""

    status: Literal["finished", "failed"]
    reason: FailReason | None = None
    message: str | None = None
    """For a failure: what happened, naming the budget exceeded or the provider's error."""
    summary: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost: Decimal | None = Decimal(0)
    rounds: int = 0
    model: str = ""
    evidence: list[str] = Field(default_factory=list)
    verify_results: list[VerifyResult] = Field(default_factory=list)
    duration_s: float = 0.0
    refusals: list[str] = Field(default_factory=list)
    """What baro refused to commit during the attempt (undone by the agent, or not)."""


class _Failed(Exception):
    def __init__(self, reason: FailReason, message: str) -> None:
        super().__init__(message)
        self.reason: FailReason = reason
        self.message = message


def story_test_command(entry: str) -> str:
    """A story's `tests` entry as a shell command: a pytest node id or file runs under pytest."""
    text = entry.strip()
    if " " not in text and ("::" in text or text.endswith(".py")):
        return f"python3 -m pytest -q {shlex.quote(text)}"
    return text


class _Meter(UsageMeter):
    """The shared meter plus the story's per-phase round limit."""

    def __init__(self, budget: StoryBudget, pricer: Pricer, model: str) -> None:
        super().__init__(pricer, model)
        self.budget = budget

    def exceeded(self, phase_rounds: int, round_cap: int) -> str | None:
        b = self.budget
        problem = super().over_budget("the story", b.max_tokens, b.max_cost_usd)
        if problem is None and phase_rounds >= round_cap:
            return f"the story was not finished within {round_cap} model rounds"
        return problem


class Opening:
    """A story's first model turn, asked for before its worktree exists.

    The first prompt needs only the brief, so the token, the checkout, the run's environment
    and its `setup:` links are prepared while the model thinks: none of it sits on the
    critical path unless it takes longer than the model's first answer.
    """

    def __init__(self, client: ModelClient, brief: StoryBrief, specs: Sequence[ToolSpec]) -> None:
        self.conversation = Conversation(system=system_prompt(brief)).user(first_message(brief))
        self.task: asyncio.Task[AssistantTurn] = asyncio.ensure_future(
            client.complete(self.conversation, specs)
        )
        # a story that ends before its agent starts never reads the turn: no warning then
        self.task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def cancel(self) -> None:
        self.task.cancel()


class StoryAgent:
    """One story attempt's agent; keeps its conversation across verification and conflicts."""

    def __init__(
        self,
        client: ModelClient,
        brief: StoryBrief,
        worktree: Path,
        sandbox: CommandSandbox,
        *,
        pricer: Pricer,
        budget: StoryBudget | None = None,
        should_stop: StopCheck | None = None,
        tools: StoryTools | None = None,
        precommit: PrecommitCheck | None = None,
        environment: str = "",
        before_verify: BeforeVerify | None = None,
        opening: Opening | None = None,
    ) -> None:
        self.client = client
        self.brief = brief
        self.worktree = worktree
        self.sandbox = sandbox
        self.budget = budget or StoryBudget()
        self.should_stop = should_stop
        self.precommit = precommit
        self.environment = environment
        self.before_verify = before_verify
        self.refusals: list[str] = []
        """Every refusal the agent was shown, undone or not: the report lists them."""
        self.tools = tools or StoryTools(worktree, sandbox)
        self._opening = opening
        self.conversation = (
            opening.conversation
            if opening is not None
            else Conversation(system=system_prompt(brief)).user(first_message(brief))
        )
        self._meter = _Meter(self.budget, pricer, client.config.model_id)
        self._evidence: deque[str] = deque(maxlen=EVIDENCE_ITEMS)
        self._verify_results: list[VerifyResult] = []
        self._summary = ""
        self._started = time.monotonic()
        self._conflicts = 0
        self._worked = False
        self._result: AgentResult | None = None

    @property
    def result(self) -> AgentResult:
        """The latest outcome (after `work`, updated by `resolve_conflict`)."""
        if self._result is None:
            raise RuntimeError("the agent has not worked yet")
        return self._result

    async def work(self) -> AgentResult:
        """Run the story to a verified finish, or to a typed failure."""
        if self._worked:
            raise RuntimeError("work() runs once per agent; use resolve_conflict to continue")
        self._worked = True
        repairs = _Repairs(self.budget.verify_rounds)
        try:
            self._summary = await self._drive(
                self.budget.max_rounds, lambda: self._after_finish(repairs)
            )
        except _Failed as failed:
            return self._conclude(failed)
        return self._conclude(None)

    async def resolve_conflict(self, files: Sequence[str], details: str) -> bool:
        """Continue the conversation to resolve conflict markers in `files`; True when done.

        Done means: the agent called finish, no markers remain in `files` and verification
        passes. Updates `result` either way.
        """
        if not self._worked:
            raise RuntimeError("resolve_conflict() needs a finished work() first")
        if self._conflicts >= self.budget.conflict_rounds:
            self._result = self._failure(
                "conflict", f"conflict resolution was already tried {self._conflicts} times"
            )
            return False
        self._conflicts += 1
        self.conversation.user(conflict_message(files, details))
        repairs = _Repairs(self.budget.verify_rounds)
        try:
            self._summary = await self._drive(
                self.budget.conflict_max_rounds,
                lambda: self._after_conflict_finish(list(files), repairs),
            )
        except _Failed as failed:
            self._conclude(failed)
            return False
        self._conclude(None)
        return True

    # --- the loop ---------------------------------------------------------------------------

    async def _drive(
        self, round_cap: int, after_finish: Callable[[], Awaitable[str | None]]
    ) -> str:
        """Model turns until `finish` is accepted and `after_finish` has no complaint."""
        phase_rounds = 0
        nudged = False
        while True:
            if self._opening is None:  # an opening turn is paid for already: read it first
                await self._check_stop()
            turn = await self._complete()
            phase_rounds += 1
            self.conversation.assistant(turn)
            summary: str | None = None
            for call in turn.tool_calls:
                outcome = await self._call(call)
                self.conversation.tool_result(call.id, outcome.content, is_error=outcome.is_error)
                if outcome.finished is not None:
                    summary = outcome.finished
            if not turn.tool_calls:
                if nudged:
                    raise _Failed(
                        "no_finish", "the model stopped calling tools without calling finish"
                    )
                nudged = True
                self.conversation.user(nudge_message(turn.stop_reason == "max_tokens"))
            else:
                nudged = False
            if summary is not None:
                complaint = await after_finish()
                if complaint is None:
                    return summary
                self.conversation.user(complaint)
            problem = self._meter.exceeded(phase_rounds, round_cap)
            if problem is not None:
                raise _Failed("budget", problem)

    async def _check_stop(self) -> None:
        if self.should_stop is not None and await self.should_stop():
            raise _Failed("cancelled", "the story was cancelled")

    async def _complete(self) -> AssistantTurn:
        opening, self._opening = self._opening, None
        try:
            if opening is not None:
                turn = await opening.task
            else:
                turn = await self.client.complete(self.conversation, self.tools.specs)
        except FatalError as exc:
            raise _Failed("model_fatal", f"the model failed: {exc}") from exc
        except RetryableError as exc:
            raise _Failed("model_unavailable", f"the model stayed unavailable: {exc}") from exc
        except ModelError as exc:
            raise _Failed("model_fatal", f"the model failed: {exc}") from exc
        self._meter.add(turn)
        return turn

    async def _call(self, call: ToolCall) -> ToolOutcome:
        if call.arguments is None:
            outcome = ToolOutcome(f"error: {call.error or 'invalid arguments'}", is_error=True)
        else:
            outcome = await self.tools.call(call.name, call.arguments)
        if call.name == "bash" or outcome.is_error:
            self._note(_describe_call(call), outcome.content)
        if outcome.refused is not None and outcome.refused not in self.refusals:
            self.refusals.append(outcome.refused)
        return outcome

    def _note(self, title: str, content: str) -> None:
        body = content if len(content) <= EVIDENCE_CHARS else "…" + content[-EVIDENCE_CHARS:]
        self._evidence.append(f"{title}\n{body}")

    # --- after finish -----------------------------------------------------------------------

    async def _after_finish(self, repairs: _Repairs) -> str | None:
        results = await self.verify()
        complaint = self._judge(results, repairs)
        if complaint is not None or self.precommit is None:
            return complaint
        refused = await self.precommit()
        if not refused:
            return None
        for line in refused:
            if line not in self.refusals:
                self.refusals.append(line)
        self._note("baro refused to commit", "\n".join(refused))
        if not repairs.take():
            raise _Failed(
                "refused",
                "baro refused to commit what cannot be committed safely:\n"
                + "\n".join(f"- {line}" for line in refused),
            )
        return refused_message(refused, repairs.left)

    async def _after_conflict_finish(self, files: list[str], repairs: _Repairs) -> str | None:
        marked = [name for name in files if self._has_markers(name)]
        if marked:
            if not repairs.take():
                raise _Failed("conflict", f"conflict markers remain in: {', '.join(marked)}")
            return markers_left_message(marked)
        return await self._after_finish(repairs)

    def _judge(self, results: list[VerifyResult], repairs: _Repairs) -> str | None:
        failures = [r for r in results if not r.passed]
        if not failures:
            return None
        for failure in failures:
            self._note(f"verification `{failure.command}`: {failure.status}", failure.output_tail)
        if not repairs.take():
            names = ", ".join(
                f"`{f.command}`" + (f" ({f.status})" if f.exit_code == COMMAND_NOT_FOUND else "")
                for f in failures
            )
            raise _Failed(
                "verification",
                f"verification failed after {repairs.limit} repair rounds: {names}",
            )
        shown = [CheckFailure(f.command, f.status, f.output_tail) for f in failures]
        return verification_failed_message(shown, repairs.left)

    async def verify(self) -> list[VerifyResult]:
        """Run the story's tests, then the repository's verification commands, in the sandbox.

        Infrastructure errors of the sandbox propagate: they are not the story's fault.
        """
        planned: list[tuple[str, Literal["story", "repository"]]] = []
        seen: set[str] = set()
        for entry in self.brief.story.tests:
            command = story_test_command(entry)
            if command and command not in seen:
                seen.add(command)
                planned.append((command, "story"))
        for command in self.brief.verify_commands:
            if command.strip() and command not in seen:
                seen.add(command)
                planned.append((command, "repository"))
        if self.before_verify is not None:
            failed = await self.before_verify()
            if failed:
                self._verify_results = failed
                return failed
        results = []
        for command, source in planned:
            run = await self.sandbox.run(
                command, cwd=self.worktree, timeout=self.budget.verify_timeout_s, network=False
            )
            results.append(_verify_result(command, source, run, self.environment))
        self._verify_results = results
        return results

    def _has_markers(self, name: str) -> bool:
        try:
            path = self.tools.paths.resolve(name)
            if not path.is_file():
                return False
            data = path.read_bytes()
        except (OSError, ValueError):
            return False
        return any(
            line.startswith((b"<<<<<<<", b">>>>>>>", b"|||||||")) for line in data.splitlines()
        )

    # --- results ----------------------------------------------------------------------------

    def _conclude(self, failed: _Failed | None) -> AgentResult:
        if failed is None:
            result = self._base("finished")
        else:
            log.info("story %s failed: %s: %s", self.brief.story.id, failed.reason, failed.message)
            result = self._failure(failed.reason, failed.message)
        self._result = result
        return result

    def _failure(self, reason: FailReason, message: str) -> AgentResult:
        return self._base("failed").model_copy(update={"reason": reason, "message": message})

    def _base(self, status: Literal["finished", "failed"]) -> AgentResult:
        meter = self._meter
        return AgentResult(
            status=status,
            summary=self._summary,
            usage=meter.usage,
            cost=meter.cost,
            rounds=meter.rounds,
            model=meter.model,
            evidence=list(self._evidence),
            verify_results=list(self._verify_results),
            duration_s=round(time.monotonic() - self._started, 3),
            refusals=list(self.refusals),
        )


class _Repairs:
    """How many times a failed check may still go back to the agent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def left(self) -> int:
        return self.limit - self.used

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True


def _describe_call(call: ToolCall) -> str:
    args = call.arguments or {}
    if call.name == "bash" and isinstance(args.get("command"), str):
        return f"$ {cap_text(args['command'], 300)}"
    if call.name == "editor":
        return f"editor {args.get('command', '?')} {args.get('path', '')}".rstrip()
    return call.name


def _verify_result(
    command: str, source: Literal["story", "repository"], run: CommandResult, environment: str
) -> VerifyResult:
    output = run.output.rstrip("\n")
    if len(output) > VERIFY_TAIL_CHARS:
        output = "…" + output[-VERIFY_TAIL_CHARS:]
    return VerifyResult(
        command=command,
        source=source,
        exit_code=run.exit_code,
        timed_out=run.timed_out,
        duration_s=round(run.duration, 3),
        passed=run.ok,
        output_tail=output,
        environment=environment,
    )
