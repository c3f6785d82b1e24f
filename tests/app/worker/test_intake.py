"""The intake's decisions in process: the worker's `handle_trigger` job and `Intake` against
a real Redis and the testbed GitHub, with triggers routed from webhook payloads as the web
process routes them. Who may start a run, what a label and each `/baro` command do, a
delivery handled twice, and a trigger on an issue whose run is still going.
(tests/e2e/test_intake.py keeps the wiring through real processes.)"""

from __future__ import annotations

import pytest

from app.core.run import run_id_for
from app.core.triggers import Trigger
from app.github import LABEL_RUNNING
from app.queue import ORCHESTRATOR_QUEUE
from app.worker.intake import Intake, IntakeResult
from app.worker.main import handle_trigger
from tests.app.worker.conftest import Bench


async def handle(bench: Bench, trigger: Trigger) -> str:
    """The worker's job for one delivery, as arq runs it."""
    return await handle_trigger(bench.ctx, trigger.model_dump(mode="json"))


async def intake_once(bench: Bench, trigger: Trigger) -> IntakeResult:
    """`Intake.handle` alone, as a re-run of a job whose worker died mid-way runs it again."""
    s = bench.services
    async with s.gateway.installation(trigger.installation_id).session() as gh:
        intake = Intake(
            gh=gh,
            store=s.store,
            bot_login=bench.settings.bot_login,
            trigger_label=bench.settings.trigger_label,
            enqueue_plan=s.jobs.plan,
            enqueue_start=s.jobs.start,
            refresh=s.jobs.refresh,
        )
        return await intake.handle(trigger)


# --- who may start a run ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["write", "maintain", "admin"])
async def test_a_writer_s_label_queues_a_run(bench: Bench, role: str) -> None:
    repo = bench.new_repo(writers=())
    bench.state.set_permission(repo, "alice", role)
    issue = bench.new_issue(repo)
    trigger = bench.label(repo, issue.number, sender="alice")

    assert await handle(bench, trigger) == "queued"
    run_id = run_id_for(trigger.delivery_id)
    run = await bench.run(run_id)
    assert (run.state, run.trigger, run.requester, run.plan_only) == (
        "queued",
        "label",
        "alice",
        False,
    )
    (comment,) = bench.tracking_comments(repo, issue.number)
    assert run.comment_id == comment.id
    assert "the baro label" in comment.body and "@alice" in comment.body
    # the queued comment answers a label; a 👀 would be one more spaced write
    assert bench.state.reactions(repo, issue_number=issue.number) == []
    assert await bench.queued() == [f"plan:{run_id}"]


@pytest.mark.parametrize("role", ["triage", "read", "none"])
async def test_without_write_access_nobody_starts_a_run(bench: Bench, role: str) -> None:
    """A triager can add labels without being able to write: the sender is what counts."""
    repo = bench.new_repo(writers=())
    bench.state.set_permission(repo, "bob", role)
    issue = bench.new_issue(repo)
    for trigger in (
        bench.label(repo, issue.number, sender="bob"),
        bench.comment(repo, issue.number, "/baro", sender="bob"),
    ):
        assert await handle(bench, trigger) == "denied"
    replies = bench.replies(repo, issue.number)
    assert len(replies) == 2, replies
    shown = "none" if role == "none" else "read"  # what GitHub's permission API says
    for reply in replies:
        assert "@bob" in reply and "only starts for people with write access" in reply
        assert f"(yours is `{shown}`)" in reply
    assert bench.tracking_comments(repo, issue.number) == []
    assert bench.state.reactions(repo, issue_number=issue.number) == []
    assert await bench.services.store.active_run(f"octo-org/{repo.name}#{issue.number}") is None
    assert await bench.queued() == []


# --- a label and the /baro commands -----------------------------------------------------------


async def test_a_baro_comment_starts_a_run_and_reacts_on_the_comment(bench: Bench) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    trigger = bench.comment(repo, issue.number, "/baro")
    assert trigger.comment_id is not None

    assert await handle(bench, trigger) == "queued"
    run = await bench.run(run_id_for(trigger.delivery_id))
    assert (run.trigger, run.plan_only, run.instructions) == ("comment", False, "")
    (comment,) = bench.tracking_comments(repo, issue.number)
    assert "a /baro comment" in comment.body
    on_comment = bench.state.reactions(repo, comment_id=trigger.comment_id)
    assert [(r.content, r.user.login) for r in on_comment] == [("eyes", bench.bot_login)]
    assert bench.state.reactions(repo, issue_number=issue.number) == []


async def test_plan_asks_for_approval_and_carries_the_instructions(bench: Bench) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    trigger = bench.comment(repo, issue.number, "/baro plan keep it small")

    assert await handle(bench, trigger) == "queued"
    run = await bench.run(run_id_for(trigger.delivery_id))
    assert (run.plan_only, run.instructions) == (True, "keep it small")
    assert await bench.queued() == [f"plan:{run.id}"]


async def test_help_and_a_broken_command_reply_and_start_nothing(bench: Bench) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    helped = bench.comment(repo, issue.number, "/baro help")
    broken = bench.comment(repo, issue.number, "/baro retry the red one")
    assert broken.verb == "invalid"

    assert await handle(bench, helped) == "help"
    assert await handle(bench, broken) == "invalid"
    first, second = bench.replies(repo, issue.number)
    assert "/baro plan" in first and "/baro cancel" in first
    assert second.split("\n")[1] == (
        "I could not read that command: `/baro retry` takes story ids like S3; "
        "not understood: THE, RED, ONE"
    )
    assert bench.tracking_comments(repo, issue.number) == []
    assert await bench.queued() == []
    # 👀 acknowledges a command that was understood; a broken one gets only the reply.
    assert [r.content for r in bench.state.reactions(repo, comment_id=helped.comment_id)] == [
        "eyes"
    ]
    assert bench.state.reactions(repo, comment_id=broken.comment_id) == []


@pytest.mark.parametrize("verb", ["status", "cancel", "retry", "approve"])
async def test_a_command_without_a_run_says_there_is_none(bench: Bench, verb: str) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    assert await handle(bench, bench.comment(repo, issue.number, f"/baro {verb}")) == "no-run"
    (reply,) = bench.replies(repo, issue.number)
    assert f"There is no baro run on this issue to {verb}." in reply


# --- duplicates and a run already going ------------------------------------------------------


async def test_the_same_delivery_twice_is_handled_once(bench: Bench) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    trigger = bench.label(repo, issue.number)

    assert await handle(bench, trigger) == "queued"
    assert await handle(bench, trigger) == "already handled"
    assert len(bench.tracking_comments(repo, issue.number)) == 1
    assert await bench.queued() == [f"plan:{run_id_for(trigger.delivery_id)}"]


async def test_an_intake_run_again_after_a_crash_changes_nothing(bench: Bench) -> None:
    """arq re-runs a job whose worker died before it finished: same run, same comment."""
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    trigger = bench.label(repo, issue.number)

    first = await intake_once(bench, trigger)
    again = await intake_once(bench, trigger)
    assert first == again == IntakeResult("queued", run_id_for(trigger.delivery_id))
    assert len(bench.tracking_comments(repo, issue.number)) == 1
    assert await bench.queued() == [f"plan:{first.run_id}"]  # one job id, enqueued once


async def test_a_new_trigger_while_a_run_is_going_points_at_it(bench: Bench) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    first = bench.label(repo, issue.number)
    assert await handle(bench, first) == "queued"
    (tracking,) = bench.tracking_comments(repo, issue.number)

    # GitHub sends a new delivery per label event; a /baro comment is another trigger.
    for second in (bench.label(repo, issue.number), bench.comment(repo, issue.number, "/baro")):
        assert await handle(bench, second) == "already-running"
    replies = bench.replies(repo, issue.number)
    assert len(replies) == 2
    run_id = run_id_for(first.delivery_id)
    for reply in replies:
        assert f"A baro run is already active on this issue (`{run_id}`)" in reply
        assert f"#issuecomment-{tracking.id}))" in reply
    assert bench.tracking_comments(repo, issue.number) == [tracking]
    assert (await bench.run(run_id)).state == "queued"
    assert await bench.queued() == [f"plan:{run_id}"]


# --- commands on a run ------------------------------------------------------------------------


async def test_cancel_stops_the_run_and_takes_the_running_label_off(bench: Bench) -> None:
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    started = bench.label(repo, issue.number)
    assert await handle(bench, started) == "queued"
    run_id = run_id_for(started.delivery_id)
    bench.state.add_labels(repo, issue.number, [LABEL_RUNNING])

    assert await handle(bench, bench.comment(repo, issue.number, "/baro cancel")) == "cancelled"
    run = await bench.run(run_id)
    assert run.state == "cancelled"
    assert LABEL_RUNNING not in bench.state.labels(repo, issue.number)
    assert any(f"Run `{run_id}` is cancelled" in r for r in bench.replies(repo, issue.number))
    jobs = await bench.redis.queued_jobs(queue_name=ORCHESTRATOR_QUEUE)
    assert "refresh_run" in {job.function for job in jobs}
    # Cancelled is final: another cancel finds nothing to stop.
    assert await handle(bench, bench.comment(repo, issue.number, "/baro cancel")) == "no-run"
