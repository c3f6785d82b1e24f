"""One attempt's agent CLI (Claude Code or Codex): turns in the sandbox, through a gateway.

Per attempt: a model gateway holding the real key or subscription token and the
attempt's budget and round cap, bridged into the sandbox as one loopback port
(`runner/bridge.py`), and a private writable HOME on the host, mounted at the sandbox's
HOME for every turn, so later turns resume the same CLI session (Claude Code
`--resume <id>`, Codex `exec resume --last`). The CLI gets only the dummy key and the
bridged URL; its own sandbox, approvals, telemetry and non-essential traffic are off.

A turn ends in one of a few plain ways (`TurnResult.failure`): the CLI exited non-zero,
hung past the timeout, broke a sandbox limit, or the gateway stopped the attempt (budget)
or saw the provider fail; each says what happened. The tally is the gateway's metering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from app.llm.config import ModelConfig
from app.llm.prices import PriceTable
from runner.bridge import GatewayBridge
from runner.bwrap import HOME
from runner.engines import (
    CLAUDE_CODE,
    CODEX,
    ENGINES,
    Engine,
    Invocation,
    claude_invocation,
    codex_invocation,
    engine_binary,
    engines_dir,
)
from runner.gateway import Budget, Gateway, Tally, Upstream
from runner.sandbox import WORKDIR as SANDBOX_WORKDIR
from runner.sandbox import CommandSandbox, Mount

ENGINES_MOUNT = "/opt/baro-engines"
MAX_PROMPT_CHARS = 100_000
"""One argv string may be at most 128 KiB (MAX_ARG_STRLEN)."""
TurnFailure = Literal["exit", "timeout", "limit", "budget", "provider", "cancelled"]


@dataclass(frozen=True)
class TurnResult:
    """How one CLI turn ended. `failure` is None when the CLI exited 0 on its own."""

    exit_code: int | None
    output: str
    """The CLI's captured output (head and tail when it flooded), secret-free."""
    dropped_bytes: int
    duration_s: float
    failure: TurnFailure | None = None
    message: str | None = None
    final_text: str = ""
    """The CLI's last answer, read from its JSON events."""

    @property
    def ok(self) -> bool:
        return self.failure is None


class EngineSession:
    """The CLI of one attempt: `await start()`, `await turn(prompt)` …, `await close()`."""

    def __init__(
        self,
        config: ModelConfig,
        secret: str,
        sandbox: CommandSandbox,
        worktree: Path,
        *,
        prices: PriceTable,
        budget: Budget,
        timeout_s: float,
        engines: Path | None = None,
        read_only_tools: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if config.engine not in ENGINES:
            raise ValueError(f"model {config.name!r} runs on engine {config.engine!r}, not a CLI")
        self.config = config
        self.engine: Engine = ENGINES[config.engine]
        self.sandbox = sandbox
        self.worktree = worktree
        self.timeout_s = timeout_s
        self.engines = (engines or engines_dir()).resolve()
        self.read_only_tools = read_only_tools
        self.extra_args = extra_args
        upstream = Upstream.for_model(config, secret, subscription=config.auth == "subscription")
        self.gateway = Gateway(upstream, prices, budget)
        self.bridge = GatewayBridge(self.gateway)
        self.turns = 0
        self._session_id = str(uuid.uuid4())
        self._home: Path | None = None
        self._secret = secret

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def tally(self) -> Tally:
        return self.gateway.tally

    @property
    def cost(self) -> Decimal | None:
        return self.tally.cost_usd

    async def start(self) -> None:
        engine_binary(self.engine, self.engines)  # EngineMissing names scripts/install
        self._home = await asyncio.to_thread(_private_home, self.engine)
        await self.bridge.start()

    async def close(self) -> None:
        await self.bridge.close()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    async def __aenter__(self) -> EngineSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def home(self) -> Path:
        if self._home is None:
            raise RuntimeError("the engine session has not been started")
        return self._home

    def invocation(self, prompt: str) -> Invocation:
        """The argv and environment of the next turn, as seen inside the sandbox."""
        if len(prompt) > MAX_PROMPT_CHARS:
            prompt = prompt[:MAX_PROMPT_CHARS] + "\n[… prompt cut at 100,000 characters]"
        home = Path(HOME)
        url = self.bridge.url
        model = self.config.model_id
        if self.engine is CLAUDE_CODE:
            args = ["--session-id", self._session_id] if self.turns == 0 else []
            if self.turns > 0:
                args = ["--resume", self._session_id]
            if self.read_only_tools:
                args += ["--disallowedTools", "Write,Edit,MultiEdit,NotebookEdit,Bash"]
            inv = claude_invocation(
                prompt,
                base_url=url,
                home=home,
                model=model,
                extra_args=[*args, *self.extra_args],
                base=self.engines,
            )
            inv.env["IS_SANDBOX"] = "1"  # its own permission prompts are off inside ours
        else:
            inv = codex_invocation(
                prompt,
                base_url=url,
                home=home,
                model=model,
                extra_args=list(self.extra_args),
                base=self.engines,
            )
            if self.turns > 0:  # `exec [options] resume --last PROMPT`: this HOME's session
                inv.argv[-1:] = ["resume", "--last", prompt]
        inside = f"{ENGINES_MOUNT}/bin/{self.engine.command}"
        inv.argv[0] = inside
        return inv

    def _write_files(self, inv: Invocation) -> None:
        for path, text in inv.files.items():
            host = self.home / path.relative_to(HOME)
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(text)

    async def turn(self, prompt: str) -> TurnResult:
        """Run the CLI once in the worktree; the gateway's stop ends it at once."""
        inv = self.invocation(prompt)
        await asyncio.to_thread(self._write_files, inv)
        self.turns += 1
        mounts = [
            self.bridge.mount,
            Mount(self.engines, ENGINES_MOUNT),
            Mount(self.home, HOME, writable=True),
        ]
        env = {k: v for k, v in inv.env.items() if k not in ("HOME", "PATH", "LANG")}
        env["PWD"] = SANDBOX_WORKDIR
        run = asyncio.ensure_future(
            self.sandbox.run(
                self.bridge.command(inv.argv),
                cwd=self.worktree,
                timeout=self.timeout_s,
                network=False,
                env=env,
                mounts=mounts,
            )
        )
        stopped = asyncio.ensure_future(self.gateway.stopped.wait())
        try:
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            return TurnResult(
                exit_code=None,
                output="",
                dropped_bytes=0,
                duration_s=0.0,
                failure="budget",
                message=f"the gateway stopped {self.engine.name}: {self.gateway.stop_reason}",
            )
        result = run.result()
        output = self.redact(result.output)
        final = final_text(self.engine, output)
        base = TurnResult(
            exit_code=result.exit_code,
            output=output,
            dropped_bytes=result.truncated_bytes,
            duration_s=round(result.duration, 3),
            final_text=final,
        )
        failure, message = self._judge(result.exit_code, result.timed_out, result.limit_exceeded)
        if failure is None:
            return base
        flooded = f" ({result.truncated_bytes:,} bytes of its output dropped)"
        message += flooded if result.truncated_bytes else ""
        return TurnResult(**{**base.__dict__, "failure": failure, "message": message})

    def _judge(
        self, exit_code: int | None, timed_out: bool, limit: str | None
    ) -> tuple[TurnFailure | None, str]:
        name = self.engine.name
        if self.gateway.stop_reason is not None:
            return "budget", f"the gateway stopped {name}: {self.gateway.stop_reason}"
        if timed_out:
            return "timeout", f"{name} did not finish within {self.timeout_s:g} s and was killed"
        if limit is not None:
            return "limit", f"{name} broke a sandbox limit: {limit}"
        if exit_code == 0:
            return None, ""
        why = self.gateway.last_failure
        if why is not None:
            return "provider", f"{name} exited with {exit_code} after the gateway saw: {why}"
        return "exit", f"{name} exited with {exit_code}"

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _private_home(engine: Engine) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"baro-{engine.name}-home-"))
    home.chmod(0o711)  # lent to the sandbox's uid for each turn
    return home


def final_text(engine: Engine, output: str) -> str:
    """The last answer the CLI printed as a JSON event (stream-json `result`; Codex's
    last `agent_message` item)."""
    text = ""
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if engine is CODEX:
            item = event.get("item") if event.get("type") == "item.completed" else None
            if isinstance(item, dict) and item.get("type") == "agent_message":
                text = item["text"] if isinstance(item.get("text"), str) else text
        elif event.get("type") == "result" and isinstance(event.get("result"), str):
            text = event["result"]
    return text
