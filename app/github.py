"""The githubkit gateway: App auth, installation clients and one serialized writer each.

GitHub asks integrators to make mutating requests serially per installation and at least a
second apart, and to back off on secondary rate limits. Every write goes through the
installation's `SerializedWriter`; reads go straight out. Retries (rate limits, 5xx) are
githubkit's own mechanism, driven by `RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import httpx
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import BaseCacheStrategy
from githubkit.exception import GitHubException, RateLimitExceeded, RequestError, RequestFailed
from githubkit.typing import RetryOption
from githubkit_schemas.latest.models import (
    CheckRun,
    FullRepository,
    Issue,
    IssueComment,
    PullRequest,
    PullRequestSimple,
)

from app.core.check_run import CheckOutput
from app.settings import Settings

if TYPE_CHECKING:
    from githubkit_schemas.latest.types import AppPermissionsType

    from app.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BODY = 65_536
TOKEN_REUSE_MARGIN = 10 * 60
TRUNCATION_NOTE = "\n\n---\n*… truncated: GitHub limits a comment to 65,536 characters.*"
WRITE_PERMISSIONS = frozenset({"admin", "write", "maintain"})
Reaction = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]


def truncate_body(body: str, limit: int = MAX_BODY) -> str:
    """Fit a comment/PR body under GitHub's limit instead of getting a 422."""
    if len(body) <= limit:
        return body
    return body[: limit - len(TRUNCATION_NOTE)] + TRUNCATION_NOTE


def describe_failure(exc: Exception) -> str:
    """GitHub's own words for a failed call (status, message, validation errors), short
    enough for a comment; transport errors by their kind."""
    if not isinstance(exc, RequestFailed):
        return f"{type(exc).__name__}: {exc}"[:300]
    status = exc.response.status_code
    try:
        data = exc.response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return f"GitHub answered {status}"
    message = str(data.get("message") or "").strip()
    details = [
        str(e.get("message") or e.get("code") or "").strip()
        for e in data.get("errors") or []
        if isinstance(e, dict)
    ]
    details = [d for d in details if d]
    text = f"GitHub answered {status}" + (f" {message}" if message else "")
    if details:
        text += ": " + "; ".join(details)
    return text[:300]


def is_client_error(exc: Exception) -> bool:
    """A refusal that asking again will not change (rate limits were already waited out)."""
    if isinstance(exc, RateLimitExceeded) or not isinstance(exc, RequestFailed):
        return False
    return 400 <= exc.response.status_code < 500


LABEL_RUNNING = "baro:running"
LABEL_DONE = "baro:done"
LABEL_FAILED = "baro:failed"
STATE_LABELS = (LABEL_RUNNING, LABEL_DONE, LABEL_FAILED)
"""The labels that show a run's state on its issue; at most one is set at a time."""


@dataclass(frozen=True)
class RetryPolicy:
    """When githubkit should retry a failed request, and after how long.

    Rate limits wait what GitHub says (`retry-after`, else until `x-ratelimit-reset`, else a
    minute), capped by `max_wait`; 5xx and timeouts back off exponentially. Both are bounded.
    """

    max_retries: int = 4
    base_delay: float = 0.5
    max_wait: float = 300.0

    def __call__(self, exc: GitHubException, retry_count: int) -> RetryOption:
        if retry_count >= self.max_retries:
            return RetryOption(False)
        if isinstance(exc, RateLimitExceeded):
            wait = min(exc.retry_after.total_seconds(), self.max_wait)
            log.warning("GitHub rate limit on %s; waiting %.1fs", exc.request.url.path, wait)
            return RetryOption(True, timedelta(seconds=wait))
        server_error = isinstance(exc, RequestFailed) and exc.response.status_code >= 500
        if server_error or (isinstance(exc, RequestError) and not isinstance(exc, RequestFailed)):
            wait = min(self.base_delay * 2**retry_count, self.max_wait)
            return RetryOption(True, timedelta(seconds=wait))
        return RetryOption(False)


WRITE_BURST = 2
"""Writes an installation's bucket holds: one ordinary, one spare for an urgent write."""


@dataclass
class SerializedWriter:
    """Runs one installation's writes one at a time, `spacing` seconds apart on average.

    A token bucket holding two writes: an ordinary write (labels, reactions, comment edits,
    check runs) waits until both are there and takes one, so ordinary writes alone stay
    `spacing` apart; an urgent one (the run branch, the pull request: what a run waits on)
    goes before every waiting ordinary write and may take the last token. So the bucket's
    spare write is kept for the writes on a run's critical path, and the rate never exceeds
    one write per `spacing` over any stretch longer than two writes.
    """

    spacing: float
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tokens: float = float(WRITE_BURST)
    _stamp: float = field(default_factory=time.monotonic)
    _busy: bool = False
    _waiting: list[tuple[int, int]] = field(default_factory=list)
    """(0 urgent / 1 ordinary, arrival): the smallest goes next."""
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self, call: Callable[[], Awaitable[T]], *, urgent: bool = False) -> T:
        need = 1.0 if urgent else float(WRITE_BURST)
        ticket = (0 if urgent else 1, next(self._arrivals))
        async with self._cond:
            self._waiting.append(ticket)
            try:
                while True:
                    wait: float | None = None
                    if not self._busy and min(self._waiting) == ticket:
                        wait = self._wait_for(need)
                        if wait <= 0:
                            break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), wait)
                self._tokens -= 1
                self._busy = True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()
        try:
            return await call()
        finally:
            async with self._cond:
                self._busy = False
                self._cond.notify_all()

    def backlog(self) -> float:
        """Seconds an ordinary write arriving now would wait (an estimate: every write ahead
        of it takes one spacing). Comment edits yield to a backlog instead of joining it."""
        if self.spacing <= 0:
            return 0.0
        refilled = self._tokens + (time.monotonic() - self._stamp) / self.spacing
        ahead = len(self._waiting) + (1 if self._busy else 0)
        return (max(0.0, WRITE_BURST - refilled) + ahead) * self.spacing

    def _wait_for(self, need: float) -> float:
        if self.spacing <= 0:
            self._tokens = float(WRITE_BURST)
            return 0.0
        now = time.monotonic()
        self._tokens = min(float(WRITE_BURST), self._tokens + (now - self._stamp) / self.spacing)
        self._stamp = now
        return (need - self._tokens) * self.spacing


class InstallationClient:
    """The bot's view of one installation: the reads and writes runs need."""

    def __init__(self, gh: GitHub[AppInstallationAuthStrategy], writer: SerializedWriter) -> None:
        self.gh = gh
        self.writer = writer

    @asynccontextmanager
    async def session(self) -> AsyncIterator[InstallationClient]:
        """One HTTP connection pool for a job's calls (githubkit keeps it per task)."""
        async with self.gh:
            yield self

    async def permission(self, owner: str, repo: str, login: str) -> str:
        """`admin|write|read|none` from the collaborator API (not author_association)."""
        try:
            resp = await self.gh.rest.repos.async_get_collaborator_permission_level(
                owner, repo, login
            )
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                return "none"
            raise
        return resp.parsed_data.permission

    async def repository(self, owner: str, repo: str) -> FullRepository:
        return (await self.gh.rest.repos.async_get(owner, repo)).parsed_data

    async def issue(self, owner: str, repo: str, number: int) -> Issue:
        return (await self.gh.rest.issues.async_get(owner, repo, number)).parsed_data

    async def react_to_issue(self, owner: str, repo: str, number: int, content: Reaction) -> None:
        await self.writer.run(
            lambda: self.gh.rest.reactions.async_create_for_issue(
                owner, repo, number, content=content
            )
        )

    async def react_to_comment(
        self, owner: str, repo: str, comment_id: int, content: Reaction
    ) -> None:
        await self.writer.run(
            lambda: self.gh.rest.reactions.async_create_for_issue_comment(
                owner, repo, comment_id, content=content
            )
        )

    async def find_comment(
        self, owner: str, repo: str, number: int, marker: str, author: str
    ) -> IssueComment | None:
        """The first comment by `author` that carries the hidden `marker`."""
        page = 1
        while True:
            resp = await self.gh.rest.issues.async_list_comments(
                owner, repo, number, per_page=100, page=page
            )
            comments: list[IssueComment] = resp.parsed_data
            for comment in comments:
                user = comment.user
                if user is not None and user.login == author and marker in (comment.body or ""):
                    return comment
            if len(comments) < 100:
                return None
            page += 1

    async def create_comment(self, owner: str, repo: str, number: int, body: str) -> IssueComment:
        resp = await self.writer.run(
            lambda: self.gh.rest.issues.async_create_comment(
                owner, repo, number, body=truncate_body(body)
            )
        )
        return resp.parsed_data

    async def update_comment(
        self, owner: str, repo: str, comment_id: int, body: str
    ) -> IssueComment:
        resp = await self.writer.run(
            lambda: self.gh.rest.issues.async_update_comment(
                owner, repo, comment_id, body=truncate_body(body)
            )
        )
        return resp.parsed_data

    async def upsert_comment(
        self, owner: str, repo: str, number: int, marker: str, author: str, body: str
    ) -> IssueComment:
        """Edit the comment carrying `marker`, or create it: safe to repeat after a crash."""
        existing = await self.find_comment(owner, repo, number, marker, author)
        if existing is None:
            return await self.create_comment(owner, repo, number, body)
        if existing.body == truncate_body(body):
            return existing
        return await self.update_comment(owner, repo, existing.id, body)

    async def comment_once(
        self, owner: str, repo: str, number: int, marker: str, author: str, body: str
    ) -> IssueComment:
        """The comment carrying `marker`, created with `body` if there is none, never
        edited: looked up inside the write lock, so a newer comment already written (the
        run's checklist, which replaces this one) is kept as it is."""

        async def call() -> IssueComment:
            existing = await self.find_comment(owner, repo, number, marker, author)
            if existing is not None:
                return existing
            resp = await self.gh.rest.issues.async_create_comment(
                owner, repo, number, body=truncate_body(body)
            )
            return resp.parsed_data

        return await self.writer.run(call)

    async def ensure_branch(self, owner: str, repo: str, branch: str, sha: str) -> bool:
        """Create `branch` at `sha`; False when it already exists (kept as it is)."""

        async def call() -> bool:
            try:
                await self.gh.rest.git.async_create_ref(
                    owner, repo, ref=f"refs/heads/{branch}", sha=sha
                )
            except RequestFailed as exc:
                if exc.response.status_code == 422:
                    return False
                raise
            return True

        return await self.writer.run(call, urgent=True)  # every story of the run waits on it

    async def pull(self, owner: str, repo: str, number: int) -> PullRequest:
        resp = await self.gh.rest.pulls.async_get(owner, repo, number)
        return resp.parsed_data

    async def find_pull(self, owner: str, repo: str, branch: str) -> PullRequestSimple | None:
        """The open PR from `branch`, so a re-run finds it instead of opening another."""
        resp = await self.gh.rest.pulls.async_list(
            owner, repo, state="open", head=f"{owner}:{branch}", per_page=10
        )
        pulls: list[PullRequestSimple] = resp.parsed_data
        return pulls[0] if pulls else None

    async def create_pull(
        self, owner: str, repo: str, *, title: str, body: str, head: str, base: str, draft: bool
    ) -> PullRequest:
        resp = await self.writer.run(
            lambda: self.gh.rest.pulls.async_create(
                owner,
                repo,
                title=title,
                body=truncate_body(body),
                head=head,
                base=base,
                draft=draft,
                maintainer_can_modify=True,
            ),
            urgent=True,  # the run's result; its labels and comment edits can wait
        )
        return resp.parsed_data

    async def update_pull(
        self, owner: str, repo: str, number: int, *, title: str, body: str
    ) -> None:
        await self.writer.run(
            lambda: self.gh.rest.pulls.async_update(
                owner, repo, number, title=title, body=truncate_body(body)
            )
        )

    async def mark_ready(self, node_id: str) -> None:
        """Draft → ready for review; REST cannot do this, GraphQL can."""
        query = (
            "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) "
            "{ pullRequest { id isDraft } } }"
        )
        await self.writer.run(lambda: self.gh.async_graphql(query, {"id": node_id}))

    async def request_review(self, owner: str, repo: str, number: int, login: str) -> None:
        """Ask the requester to review; GitHub refuses the PR's author, which is fine."""

        async def call() -> None:
            try:
                await self.gh.rest.pulls.async_request_reviewers(
                    owner, repo, number, reviewers=[login]
                )
            except RequestFailed as exc:
                if exc.response.status_code != 422:
                    raise

        await self.writer.run(call)

    async def create_review(
        self,
        owner: str,
        repo: str,
        number: int,
        body: str,
        comments: list[tuple[str, int, str]],
    ) -> int:
        """A COMMENT review (a bot may not approve its own PR) with inline comments on lines
        of the PR's diff; returns the review id."""

        async def call() -> int:
            response = await self.gh.rest.pulls.async_create_review(
                owner,
                repo,
                number,
                body=truncate_body(body),
                event="COMMENT",
                comments=[
                    {"path": path, "line": line, "side": "RIGHT", "body": text}
                    for path, line, text in comments
                ],
            )
            review_id: int = response.parsed_data.id
            return review_id

        return await self.writer.run(call)

    async def upsert_latest(
        self,
        owner: str,
        repo: str,
        number: int,
        marker: str,
        author: str,
        make_body: Callable[[], Awaitable[str]],
    ) -> str:
        """Upsert a comment whose body is computed inside the installation's write lock, so
        that of two concurrent renders the one written last also reflects the latest state.
        Returns the comment's web address."""

        async def call() -> str:
            body = truncate_body(await make_body())
            existing = await self.find_comment(owner, repo, number, marker, author)
            if existing is None:
                resp = await self.gh.rest.issues.async_create_comment(
                    owner, repo, number, body=body
                )
                return resp.parsed_data.html_url
            if existing.body != body:
                await self.gh.rest.issues.async_update_comment(owner, repo, existing.id, body=body)
            return existing.html_url

        return await self.writer.run(call)

    async def branch_head(self, owner: str, repo: str, branch: str) -> str | None:
        """The commit `branch` points at, or None when there is no such branch."""
        try:
            resp = await self.gh.rest.git.async_get_ref(owner, repo, f"heads/{branch}")
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                return None
            raise
        return resp.parsed_data.object_.sha

    async def find_check_run(
        self, owner: str, repo: str, sha: str, name: str, external_id: str
    ) -> CheckRun | None:
        """This App's newest check run called `name` for `external_id` on commit `sha`."""
        resp = await self.gh.rest.checks.async_list_for_ref(
            owner, repo, sha, check_name=name, filter_="all", per_page=100
        )
        runs: list[CheckRun] = resp.parsed_data.check_runs
        mine = [r for r in runs if r.external_id == external_id]
        return max(mine, key=lambda r: r.id) if mine else None

    async def create_check_run(
        self,
        owner: str,
        repo: str,
        *,
        name: str,
        head_sha: str,
        external_id: str,
        output: CheckOutput,
        details_url: str | None,
    ) -> CheckRun:
        body: dict[str, Any] = {
            "name": name,
            "head_sha": head_sha,
            "external_id": external_id,
            **_check_fields(output, details_url),
        }
        resp = await self.writer.run(
            lambda: self.gh.rest.checks.async_create(owner, repo, data=cast("Any", body))
        )
        return resp.parsed_data

    async def update_check_run(
        self, owner: str, repo: str, check_run_id: int, output: CheckOutput, details_url: str | None
    ) -> CheckRun:
        body = _check_fields(output, details_url)
        resp = await self.writer.run(
            lambda: self.gh.rest.checks.async_update(
                owner, repo, check_run_id, data=cast("Any", body)
            )
        )
        return resp.parsed_data

    async def add_labels(self, owner: str, repo: str, number: int, labels: list[str]) -> None:
        await self.writer.run(
            lambda: self.gh.rest.issues.async_add_labels(owner, repo, number, labels=labels)
        )

    async def set_state_label(self, owner: str, repo: str, number: int, label: str | None) -> None:
        """Exactly one of the state labels on the issue (none for a cancelled run). The
        issue's labels are read first (a read is cheap and unthrottled): no write is sent
        that would change nothing, such as removing a label that is not there."""
        issue = await self.issue(owner, repo, number)
        present = {lb if isinstance(lb, str) else (lb.name or "") for lb in issue.labels}
        for other in STATE_LABELS:
            if other != label and other in present:
                await self.remove_label(owner, repo, number, other)
        if label is not None and label not in present:
            await self.add_labels(owner, repo, number, [label])

    async def remove_label(self, owner: str, repo: str, number: int, label: str) -> None:
        async def call() -> None:
            try:
                await self.gh.rest.issues.async_remove_label(owner, repo, number, label)
            except RequestFailed as exc:
                if exc.response.status_code != 404:
                    raise

        await self.writer.run(call)


def _check_fields(output: CheckOutput, details_url: str | None) -> dict[str, Any]:
    """A check run write's status, conclusion and output as GitHub takes them."""
    fields: dict[str, Any] = {
        "status": output.status,
        "output": {"title": output.title, "summary": output.summary},
    }
    if output.conclusion is not None:
        fields["conclusion"] = output.conclusion
        fields["completed_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if details_url:
        fields["details_url"] = details_url
    return fields


class GitHubGateway:
    """Makes installation clients; one writer per installation for the process's lifetime."""

    def __init__(
        self, settings: Settings, cache: BaseCacheStrategy, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.retry = RetryPolicy(max_retries=settings.github_write_max_retries)
        self.app = GitHub(
            AppAuthStrategy(str(settings.github_app_id), settings.private_key_pem()),
            base_url=settings.github_api_url,
            cache_strategy=cache,
            auto_retry=self.retry,
            # Find-then-update needs fresh reads: a cached comment list (GitHub allows 60 s)
            # could hide a comment we just wrote and lead to a duplicate.
            http_cache=False,
            user_agent=f"{settings.github_app_slug}/baro-bot",
            # One TLS context for the process: githubkit builds an HTTP client per session
            # (and per call outside one), and loading the CA bundle each time was a sixth
            # of the worker's CPU under load (measured with py-spy, bench/schedule.py fair).
            ssl_verify=httpx.create_ssl_context(),
        )
        self._writers: dict[int, SerializedWriter] = {}
        self._tokens: dict[tuple[int, str, tuple[tuple[str, str], ...]], tuple[str, float]] = {}
        self._clients: dict[int, InstallationClient] = {}

    async def repo_token(self, installation_id: int, repo: str, permissions: dict[str, str]) -> str:
        """An installation token narrowed to one repository and the given permissions,
        reused in this process until shortly before it expires (GitHub: one hour)."""
        key = (installation_id, repo, tuple(sorted(permissions.items())))
        cached = self._tokens.get(key)
        if cached is not None and cached[1] - time.time() > TOKEN_REUSE_MARGIN:
            return cached[0]
        resp = await self.app.rest.apps.async_create_installation_access_token(
            installation_id,
            repositories=[repo],
            permissions=cast("AppPermissionsType", permissions),
        )
        token: str = resp.parsed_data.token
        expires = datetime.strptime(resp.parsed_data.expires_at, "%Y-%m-%dT%H:%M:%SZ")
        self._tokens[key] = (token, expires.replace(tzinfo=UTC).timestamp())
        return token

    def installation(self, installation_id: int) -> InstallationClient:
        client = self._clients.get(installation_id)
        if client is None:
            writer = self._writers.setdefault(
                installation_id, SerializedWriter(self.settings.github_write_spacing)
            )
            gh = self.app.with_auth(self.app.auth.as_installation(installation_id))
            if self.metrics is not None:  # every response's rate-limit headers, per installation
                hooks = {"response": [self.metrics.response_hook(installation_id)]}
                gh = GitHub(gh.auth, config=replace(gh.config, async_event_hooks=hooks))
            client = InstallationClient(gh, writer)
            self._clients[installation_id] = client
        return client
