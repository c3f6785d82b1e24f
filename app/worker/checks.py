"""The run's check run on its branch, written beside the tracking comment and never in the
way: whatever GitHub answers, the run goes on (a failure is logged, never raised).

Written on the same debounce as the tracking comment (`Orchestrator.write_tracking`). The
check run sits on the branch's head commit, so it appears once the first story landed
(before that the head is the base commit, which belongs to the default branch), follows the
head as stories land (the one left behind is closed as `neutral`), and ends with the run's
conclusion. What was last written is kept beside the run (`RunStore.check_ref`); the check run
is also looked up on the commit before one is created, so two workers do not make two.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from githubkit.exception import RequestFailed

from app.core.check_run import CHECK_NAME, CheckRef, render_check, render_superseded
from app.core.run import Run
from app.github import InstallationClient, describe_failure
from app.run_links import RunLinks
from app.store import RunStore

log = logging.getLogger(__name__)

REFUSED_STATUSES = frozenset({403, 404})
"""GitHub's answer when the installation has no `checks` permission (an App installed before
it asked for one): the run stops asking."""


@dataclass
class CheckRuns:
    store: RunStore
    links: RunLinks
    _locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    async def sync(self, gh: InstallationClient, run_id: str, comment_url: str | None) -> None:
        """Bring the check run up to the run's state; never raises."""
        try:
            async with self._locks[run_id]:
                await self._sync(gh, await self.store.get(run_id), comment_url)
        except RequestFailed as exc:
            log.warning("check run of %s not written: %s", run_id, describe_failure(exc))
            if exc.response.status_code in REFUSED_STATUSES:
                ref = await self.store.check_ref(run_id) or CheckRef()
                await self.store.save_check_ref(run_id, ref.model_copy(update={"refused": True}))
        except Exception as exc:
            log.warning("check run of %s not written: %s", run_id, describe_failure(exc))

    async def _sync(self, gh: InstallationClient, run: Run, comment_url: str | None) -> None:
        if run.branch is None or run.plan is None:
            return
        ref = await self.store.check_ref(run.id)
        if ref is not None and ref.refused:
            return
        head = await gh.branch_head(run.owner, run.repo, run.branch)
        if head is None or (run.pr_branch is None and head == run.base_sha):
            return  # nothing of this run on the branch yet
        page = self.links.url(run.id, run.created_at)
        output = render_check(run, page_url=page, comment_url=comment_url)
        done = output.status == "completed"
        if ref is not None and ref.sha == head and (done or not ref.completed):
            if ref.digest != output.digest:
                await gh.update_check_run(run.owner, run.repo, ref.id, output, page)
                await self.store.save_check_ref(
                    run.id, CheckRef(id=ref.id, sha=head, completed=done, digest=output.digest)
                )
            return
        found = await gh.find_check_run(run.owner, run.repo, head, CHECK_NAME, run.id)
        if found is not None and (done or found.status != "completed"):
            check = await gh.update_check_run(run.owner, run.repo, found.id, output, page)
        else:  # a new head, or the run went on after its check run had ended (a retry)
            check = await gh.create_check_run(
                run.owner,
                run.repo,
                name=CHECK_NAME,
                head_sha=head,
                external_id=run.id,
                output=output,
                details_url=page,
            )
        if ref is not None and ref.id not in (0, check.id) and not ref.completed:
            await gh.update_check_run(run.owner, run.repo, ref.id, render_superseded(head), page)
        await self.store.save_check_ref(
            run.id, CheckRef(id=check.id, sha=head, completed=done, digest=output.digest)
        )
