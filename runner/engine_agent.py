"""A story agent whose work is done by an agent CLI (Claude Code, Codex) in the sandbox.

It has `StoryAgent`'s interface and keeps its rules: the CLI's turn ending stands for
`finish`; then baro itself runs the story's tests, `verify:` and the pre-commit check, and
whatever fails, is refused or conflicts on landing goes back to the same CLI session as a
follow-up turn, bounded by the same repair and conflict rounds. Every CLI failure (exit,
hang, sandbox limit, budget, provider) ends the attempt with a typed reason and message.
Usage and cost are the gateway's metering of the attempt.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Literal

from app.llm.config import ModelConfig, engine_model_label
from app.llm.types import AssistantTurn, Conversation, ToolSpec, UserMessage
from runner.agent import (
    AgentResult,
    BeforeVerify,
    FailReason,
    PrecommitCheck,
    StopCheck,
    StoryAgent,
    StoryBrief,
    StoryBudget,
    _Failed,
)
from runner.engine_session import EngineSession, TurnFailure, TurnResult
from runner.prompts import system_prompt
from runner.sandbox import CommandSandbox

TURN_FAILURES: dict[TurnFailure, FailReason] = {
    "exit": "engine",
    "timeout": "engine",
    "limit": "engine",
    "budget": "budget",
    "provider": "model_fatal",
    "cancelled": "cancelled",
}
OUTPUT_KEPT = 4_000

ENGINE_HOW_TO = """# How to work
- The repository root is your current directory. Look before you change: read the files \
you will edit and the code you call.
- There is no network. Do not commit or run git commands that change history: baro \
commits for you.
- Add or update tests as the story says, run them and fix failures.
- When you end your turn, baro runs the story's tests and the repository's verification \
commands; failures come back to you to fix.

"""
ENGINE_FINISH = """# Finish
When the acceptance criteria are met and the tests pass, end your turn with a short \
summary (one to three sentences) of what you changed."""


def engine_prompt(brief: StoryBrief) -> str:
    """baro's story prompt, with the parts about its own tools told the CLI's way."""
    text = system_prompt(brief)
    text = re.sub(r"# How to work\n.*?(?=# Trust)", lambda _m: ENGINE_HOW_TO, text, flags=re.S)
    text = re.sub(r"# Finish\n.*\Z", lambda _m: ENGINE_FINISH, text, flags=re.S)
    return f"{text}\n\nImplement story {brief.story.id} now."


def for_engine(message: str) -> str:
    """A follow-up written for baro's loop (`call finish`) as a CLI should read it."""
    return message.replace("call finish again", "end your turn with a short summary").replace(
        "call finish", "end your turn with a short summary"
    )


class _NoModel:
    """The engine talks to its model itself (through the gateway), never through here."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    async def complete(
        self,
        conversation: Conversation,
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int | None = None,
    ) -> AssistantTurn:
        raise RuntimeError("an engine agent does not call models directly")


class EngineAgent(StoryAgent):
    """`StoryAgent` with a CLI session doing the work; `session` must be started."""

    def __init__(
        self,
        session: EngineSession,
        brief: StoryBrief,
        worktree: Path,
        sandbox: CommandSandbox,
        *,
        budget: StoryBudget | None = None,
        should_stop: StopCheck | None = None,
        precommit: PrecommitCheck | None = None,
        environment: str = "",
        before_verify: BeforeVerify | None = None,
    ) -> None:
        super().__init__(
            _NoModel(session.config),
            brief,
            worktree,
            sandbox,
            pricer=lambda _turn: None,
            budget=budget,
            should_stop=should_stop,
            precommit=precommit,
            environment=environment,
            before_verify=before_verify,
        )
        self.session = session
        self.conversation = Conversation(system="").user(engine_prompt(brief))
        self.turns: list[TurnResult] = []

    async def _drive(
        self, round_cap: int, after_finish: Callable[[], Awaitable[str | None]]
    ) -> str:
        """CLI turns until baro's checks after a turn have no complaint (each complaint
        is one repair round, counted by `after_finish`)."""
        prompt = self._last_user()
        while True:
            await self._check_stop()
            turn = await self.session.turn(for_engine(prompt))
            self.turns.append(turn)
            self._record(turn)
            if turn.failure is not None:
                raise _Failed(TURN_FAILURES[turn.failure], turn.message or turn.failure)
            complaint = await after_finish()
            if complaint is None:
                return turn.final_text.strip() or f"{self.session.name} finished the story"
            self.conversation.user(for_engine(complaint))
            prompt = complaint

    def _last_user(self) -> str:
        for message in reversed(self.conversation.messages):
            if isinstance(message, UserMessage):
                return message.text
        raise RuntimeError("no prompt to send to the engine")

    def _record(self, turn: TurnResult) -> None:
        """The transcript: what the CLI printed (its JSON events), capped."""
        output = turn.output if len(turn.output) <= OUTPUT_KEPT else turn.output[-OUTPUT_KEPT:]
        head = f"[{self.session.name} turn {len(self.turns)}: exit {turn.exit_code}]"
        self.conversation.assistant(AssistantTurn(text=f"{head}\n{turn.final_text}"))
        if not turn.ok:
            self._note(f"{self.session.name} turn {len(self.turns)}", turn.message or "")
        self._note(f"{self.session.name} output", output)

    def _base(self, status: Literal["finished", "failed"]) -> AgentResult:
        base = super()._base(status)
        tally = self.session.tally
        cost: Decimal | None = tally.cost_usd
        return base.model_copy(
            update={
                "usage": tally.usage,
                "cost": cost,
                "rounds": tally.calls,
                "model": engine_model_label(self.session.config),
            }
        )
