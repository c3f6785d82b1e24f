"""Redelivery reconciler: ask GitHub to resend webhook deliveries we never answered with 2xx.

GitHub never retries a failed delivery, so a trigger that arrived while the web process was
down, or while Redis was (it answers 503 then), would be lost. GitHub lists every delivery
attempt and redelivers one on request for 3 days, with the same `X-GitHub-Delivery`, so the
web process's dedup still makes each event count once. A worker cron job runs a pass every
`BARO_REDELIVERY_INTERVAL_SECONDS`; a Redis lock keeps replicas from running two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from githubkit import AppAuthStrategy, GitHub
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed
from githubkit.typing import RetryOption
from githubkit.utils import UNSET
from githubkit_schemas.latest.models import HookDeliveryItem
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from app import keys
from app.github import GitHubGateway, RetryPolicy
from app.services import Services, services_of

log = logging.getLogger(__name__)

WINDOW = timedelta(days=3)
"""GitHub redelivers attempts of the last 3 days only."""
EXPIRY_MARGIN = timedelta(minutes=10)
"""An attempt this close to leaving the window is not asked for (it would get a 422)."""
MAX_PER_GUID = 5
RETRY_BASE = timedelta(minutes=5)
"""Wait after the n-th request for one event: 5 min × 4^(n-1) (5, 20, 80, 320 min), so the
tries span an outage of hours instead of failing again within minutes. The wait also covers
a redelivery that GitHub has not made yet (in flight)."""
MAX_PER_PASS = 30
"""Redelivery requests per pass, made serially `github_write_spacing` apart (rate limits)."""
PER_PAGE = 100
MAX_PAGES = 50
PERMANENT = frozenset({400, 413})
"""What the web process answers to a payload it will never accept (malformed, too large)."""
PASS_TIMEOUT = 240
LOCK_SECONDS = PASS_TIMEOUT + 60
NEXT_LINK = re.compile(r'<([^<>]+)>;\s*rel="next"')


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt as GitHub lists it; a redelivery is a new attempt, same guid."""

    id: int
    guid: str
    delivered_at: datetime
    status_code: int
    event: str = ""
    action: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def name(self) -> str:
        return f"{self.event}.{self.action}" if self.action else self.event

    @classmethod
    def of(cls, item: HookDeliveryItem) -> Attempt:
        at = item.delivered_at
        return cls(
            id=item.id,
            guid=item.guid,
            delivered_at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
            status_code=item.status_code,
            event=item.event,
            action=item.action,
        )


@dataclass(frozen=True)
class Asked:
    """What we asked GitHub for one event so far (kept in Redis for the 3-day window)."""

    count: int
    attempt_id: int
    """The attempt we asked to redeliver last time."""
    at: datetime
    gave_up: bool = False

    def dump(self) -> str:
        return json.dumps(
            {"count": self.count, "attempt": self.attempt_id, "at": self.at.timestamp()}
            | ({"gave_up": True} if self.gave_up else {})
        )

    @classmethod
    def load(cls, raw: str | bytes) -> Asked:
        data = json.loads(raw)
        return cls(
            count=int(data["count"]),
            attempt_id=int(data["attempt"]),
            at=datetime.fromtimestamp(float(data["at"]), UTC),
            gave_up=bool(data.get("gave_up", False)),
        )


@dataclass(frozen=True)
class Plan:
    redeliver: list[Attempt]
    """The newest attempt of each event to redeliver now, oldest event first."""
    skipped: dict[str, str]
    """guid → rejected | expired | waiting | exhausted | deferred (over this pass's cap)."""


def wait_before_next(count: int, base: timedelta = RETRY_BASE) -> timedelta:
    """How long after the `count`-th request the next one may be made."""
    factor: int = 4 ** max(count - 1, 0)
    return base * factor


def plan_redeliveries(
    attempts: Sequence[Attempt],
    asked: Mapping[str, Asked],
    now: datetime,
    *,
    max_per_guid: int = MAX_PER_GUID,
    max_per_pass: int = MAX_PER_PASS,
    retry_base: timedelta = RETRY_BASE,
) -> Plan:
    """Which events to redeliver now, given the listed attempts and what was asked before.

    An event qualifies when none of its attempts got a 2xx. Its newest attempt is asked for,
    once per pass, at most `max_per_guid` times in all, with a growing wait in between;
    oldest events first, at most `max_per_pass` of them.
    """
    by_guid: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_guid.setdefault(attempt.guid, []).append(attempt)
    skipped: dict[str, str] = {}
    ready: list[tuple[int, Attempt]] = []
    for guid, group in by_guid.items():
        if any(a.ok for a in group):
            continue
        newest = max(group, key=lambda a: a.id)
        before = asked.get(guid)
        if newest.status_code in PERMANENT:
            skipped[guid] = "rejected"
        elif newest.delivered_at < now - WINDOW + EXPIRY_MARGIN:
            skipped[guid] = "expired"
        elif before is not None and before.count >= max_per_guid:
            # Out of requests; "exhausted" once the last one's result shows (or is overdue).
            answered = newest.id > before.attempt_id or now - before.at >= retry_base
            skipped[guid] = "exhausted" if answered else "waiting"
        elif before is not None and now - before.at < wait_before_next(before.count, retry_base):
            skipped[guid] = "waiting"
        else:
            ready.append((min(a.id for a in group), newest))
    ready.sort(key=lambda pair: pair[0])
    for _first, newest in ready[max_per_pass:]:
        skipped[newest.guid] = "deferred"
    return Plan([newest for _first, newest in ready[:max_per_pass]], skipped)


def next_cursor(link: str | None) -> str | None:
    """The `cursor` of the `rel="next"` URL in a Link header (GitHub's cursor pagination)."""
    match = NEXT_LINK.search(link or "")
    if match is None:
        return None
    cursor: str | None = httpx.URL(match.group(1)).params.get("cursor")
    return cursor


async def list_attempts(
    gh: GitHub[AppAuthStrategy],
    since: datetime,
    *,
    per_page: int = PER_PAGE,
    max_pages: int = MAX_PAGES,
) -> list[Attempt]:
    """The App's delivery attempts, newest first, in whole pages back to `since`."""
    found: list[Attempt] = []
    cursor: str | None = None
    for _ in range(max_pages):
        resp = await gh.rest.apps.async_list_webhook_deliveries(
            per_page=per_page, cursor=cursor if cursor is not None else UNSET
        )
        page = [Attempt.of(item) for item in resp.parsed_data]
        found.extend(page)
        if not page or page[-1].delivered_at < since:
            return found
        cursor = next_cursor(resp.headers.get("link"))
        if cursor is None:
            return found
    log.warning(
        "redelivery: stopped listing after %d pages; older deliveries were not checked",
        max_pages,
    )
    return found


@dataclass
class PassResult:
    outcome: str
    """done | locked | error (GitHub refused or failed; logged, the next pass starts over)."""
    listed: int = 0
    redelivered: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _describe(exc: GitHubException) -> str:
    if isinstance(exc, RequestFailed):
        return f"{exc.response.status_code} {exc.response.text[:200]}"
    return f"{type(exc).__name__}: {exc}"


async def reconcile(
    gh: GitHub[AppAuthStrategy],
    redis: Redis,
    *,
    now: Callable[[], datetime] = _utcnow,
    spacing: float = 1.0,
    max_per_guid: int = MAX_PER_GUID,
    max_per_pass: int = MAX_PER_PASS,
    retry_base: timedelta = RETRY_BASE,
) -> PassResult:
    """One pass: list the App's deliveries of the last 3 days and ask GitHub to redeliver
    each event that never got a 2xx. A GitHub error ends the pass; it never raises one."""
    lock = redis.lock(keys.REDELIVERY_LOCK, timeout=LOCK_SECONDS, blocking=False)
    if not await lock.acquire():
        return PassResult("locked")
    try:
        return await _pass(
            gh,
            redis,
            now=now,
            spacing=spacing,
            max_per_guid=max_per_guid,
            max_per_pass=max_per_pass,
            retry_base=retry_base,
        )
    finally:
        with contextlib.suppress(LockError):
            await lock.release()


async def _pass(
    gh: GitHub[AppAuthStrategy],
    redis: Redis,
    *,
    now: Callable[[], datetime],
    spacing: float,
    max_per_guid: int,
    max_per_pass: int,
    retry_base: timedelta,
) -> PassResult:
    started = now()
    try:
        attempts = await list_attempts(gh, started - WINDOW)
    except GitHubException as exc:
        log.warning("redelivery: could not list the App's deliveries: %s", _describe(exc))
        return PassResult("error")
    newest: dict[str, Attempt] = {}
    for attempt in attempts:
        if attempt.guid not in newest or attempt.id > newest[attempt.guid].id:
            newest[attempt.guid] = attempt
    unanswered = sorted({a.guid for a in attempts} - {a.guid for a in attempts if a.ok})
    asked = await _load(redis, unanswered)
    plan = plan_redeliveries(
        attempts,
        asked,
        started,
        max_per_guid=max_per_guid,
        max_per_pass=max_per_pass,
        retry_base=retry_base,
    )
    result = PassResult("done", listed=len(attempts), skipped=plan.skipped)
    for guid, reason in plan.skipped.items():
        before = asked.get(guid)
        if reason == "exhausted" and before is not None and not before.gave_up:
            log.warning(
                "redelivery: gave up on %s delivery %s after %d redeliveries (last: %s)",
                newest[guid].name,
                guid,
                before.count,
                newest[guid].status_code,
            )
            await _save(redis, guid, dataclasses.replace(before, gave_up=True))
    for index, attempt in enumerate(plan.redeliver):
        if index and spacing > 0:
            await asyncio.sleep(spacing)
        before = asked.get(attempt.guid)
        count = (before.count if before is not None else 0) + 1
        try:
            await gh.rest.apps.async_redeliver_webhook_delivery(attempt.id)
        except RequestFailed as exc:
            if exc.response.status_code != 422:
                log.warning("redelivery: GitHub failed a request: %s", _describe(exc))
                result.outcome = "error"
                break
            # Refused for this delivery (e.g. it left the window): never ask for it again.
            log.warning(
                "redelivery: GitHub refused to redeliver %s delivery %s: %s",
                attempt.name,
                attempt.guid,
                _describe(exc),
            )
            refused = Asked(max(count, max_per_guid), attempt.id, now(), gave_up=True)
            await _save(redis, attempt.guid, refused)
            continue
        except GitHubException as exc:
            log.warning("redelivery: GitHub request failed: %s", _describe(exc))
            result.outcome = "error"
            break
        await _save(redis, attempt.guid, Asked(count, attempt.id, now()))
        result.redelivered.append(attempt.guid)
        log.info(
            "redelivery: asked GitHub to redeliver %s delivery %s (last answer %s; request %d)",
            attempt.name,
            attempt.guid,
            attempt.status_code or "none",
            count,
        )
    if result.redelivered or plan.skipped:
        reasons: dict[str, int] = {}
        for reason in plan.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        log.info(
            "redelivery pass: %d attempts listed, %d redeliveries requested, skipped %s",
            result.listed,
            len(result.redelivered),
            reasons or "none",
        )
    return result


async def _load(redis: Redis, guids: Sequence[str]) -> dict[str, Asked]:
    if not guids:
        return {}
    raws = await redis.mget([keys.redelivery_asked(g) for g in guids])
    return {g: Asked.load(raw) for g, raw in zip(guids, raws, strict=True) if raw is not None}


async def _save(redis: Redis, guid: str, asked: Asked) -> None:
    await redis.set(keys.redelivery_asked(guid), asked.dump(), ex=int(WINDOW.total_seconds()))


# The worker's cron job --------------------------------------------------------------------

_QUICK_RETRY = RetryPolicy(max_retries=2, base_delay=0.5, max_wait=10.0)


def _retry(exc: GitHubException, retry_count: int) -> RetryOption:
    """Retry 5xx briefly; a rate limit ends the pass instead of stalling the worker."""
    if isinstance(exc, RateLimitExceeded):
        return RetryOption(False)
    return _QUICK_RETRY(exc, retry_count)


def app_client(gateway: GitHubGateway) -> GitHub[AppAuthStrategy]:
    """The gateway's App (JWT) client with the reconciler's retry decision."""
    config = dataclasses.replace(gateway.app.config, auto_retry=_retry)
    return GitHub(gateway.app.auth, config=config)


async def redeliver_failed(ctx: dict[str, Any]) -> str:
    """Cron tick: run a pass when one is due. The due key expires after the interval, so
    any interval works and all replicas share one schedule (start-up included)."""
    services = services_of(ctx, Services)
    settings, redis = services.settings, services.redis
    try:
        due = await redis.set(
            keys.REDELIVERY_DUE, "1", nx=True, ex=settings.redelivery_interval_seconds
        )
        if not due:
            return "not due"
        gh = app_client(services.gateway)
        async with gh:
            result = await reconcile(gh, redis, spacing=settings.github_write_spacing)
    except (RedisError, OSError) as exc:
        log.warning("redelivery: pass skipped, Redis unavailable (%s)", type(exc).__name__)
        return "redis unavailable"
    return result.outcome
