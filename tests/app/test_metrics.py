"""Metrics' pure parts: label encoding, buckets, run transitions, delivery outcomes, rendering."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.plan import Plan
from app.core.run import Run, StoryRecord, now
from app.core.scheduler import RetryBudget, apply_failure, cancel, mark_dispatched, on_failure
from app.metrics import (
    DELIVERIES,
    GAUGE_MAX_AGE_SECONDS,
    MODEL_TOKENS,
    QUEUE_WAIT,
    RATE_LIMIT,
    STORIES,
    STORY_DURATION,
    RunnerInfo,
    Snapshot,
    StoryEnd,
    bucket_for,
    cumulative,
    decode_labels,
    encode_labels,
    histogram_ops,
    render,
    transitions,
)
from app.web.metrics_page import bearer_matches, delivery_outcome


def test_label_encoding_is_canonical_and_round_trips() -> None:
    a = encode_labels({"outcome": "queued", "event": "issues"})
    b = encode_labels({"event": "issues", "outcome": "queued"})
    assert a == b == '{"event":"issues","outcome":"queued"}'
    odd = {"model": 'we|ird "name"\n', "kind": "ünïcode,=}"}
    assert decode_labels(encode_labels(odd)) == odd
    assert decode_labels(encode_labels(odd).encode()) == odd


@pytest.mark.parametrize("raw", ["[1, 2]", '{"a": 1}', "not json", '"text"'])
def test_decoding_rejects_what_encoding_cannot_produce(raw: str) -> None:
    with pytest.raises(ValueError):
        decode_labels(raw)


def test_spec_fields_need_exactly_the_declared_labels() -> None:
    assert DELIVERIES.field({"event": "issues", "outcome": "queued"})
    with pytest.raises(ValueError, match="takes labels"):
        DELIVERIES.field({"event": "issues"})
    with pytest.raises(ValueError, match="takes labels"):
        DELIVERIES.field({"event": "issues", "outcome": "queued", "extra": "x"})


def test_bucket_for_uses_prometheus_le_semantics() -> None:
    bounds = (1.0, 5.0, 10.0)
    assert bucket_for(0.0, bounds) == 1.0
    assert bucket_for(1.0, bounds) == 1.0  # le: the bound itself belongs to the bucket
    assert bucket_for(1.0001, bounds) == 5.0
    assert bucket_for(10.0, bounds) == 10.0
    assert math.isinf(bucket_for(10.5, bounds))


def test_cumulative_buckets_fold_unknown_bounds_upwards() -> None:
    # 2.0 is not a configured bound (an older bucket layout): it counts from 5.0 on.
    counts = {1.0: 2.0, 2.0: 1.0, 10.0: 4.0, math.inf: 3.0}
    assert cumulative(counts, (1.0, 5.0, 10.0), total=10.0) == [
        ("1.0", 2.0),
        ("5.0", 3.0),
        ("10.0", 7.0),
        ("+Inf", 10.0),
    ]


def test_histogram_ops_write_one_bucket_the_sum_and_the_count() -> None:
    ops = histogram_ops(QUEUE_WAIT, 3.5, {"tier": "light"})
    enc = encode_labels({"tier": "light"})
    assert [(op.field, op.amount) for op in ops] == [  # type: ignore[union-attr]
        (f"{enc}|5.0", 1),
        (f"{enc}|sum", 3.5),
        (f"{enc}|count", 1),
    ]
    assert {op.key for op in ops} == {"baro:metrics:histogram:story_queue_wait_seconds"}


# --- run transitions, driven by the scheduler's real decisions ------------------------------


def _story(sid: str, deps: list[str], tier: str) -> dict[str, Any]:
    return {
        "id": sid,
        "title": sid,
        "description": "d",
        "depends_on": deps,
        "writes": [f"{sid}.py"],
        "acceptance": ["a"],
        "tier": tier,
    }


PLAN = Plan.model_validate(
    {
        "summary": "s",
        "design_note": "d",
        "stories": [
            _story("S1", [], "light"),
            _story("S2", ["S1"], "standard"),
            _story("S3", [], "heavy"),
        ],
    }
)


def _run() -> Run:
    return Run(
        id="r1",
        delivery_id="d",
        installation_id=1,
        owner="o",
        repo="r",
        issue_number=1,
        issue_title="t",
        requester="alice",
        trigger="label",
        state="running",
        plan=PLAN,
        stories={s.id: StoryRecord() for s in PLAN.stories},
    )


def _story_update(run: Run, sid: str, **update: Any) -> Run:
    stories = dict(run.stories)
    stories[sid] = stories[sid].model_copy(update=update)
    return run.model_copy(update={"stories": stories})


def test_a_landed_story_ends_once_with_its_duration() -> None:
    running = mark_dispatched(_run(), ["S1"])
    started = running.stories["S1"].started_at
    assert started is not None
    landed = _story_update(
        running, "S1", state="landed", finished_at=started + timedelta(seconds=42)
    )
    found = transitions(running, landed)
    assert found.story_ends == (StoryEnd("landed", "light", 42.0),)
    assert found.run_finished is None
    assert transitions(landed, landed).story_ends == ()  # a repeated write changes nothing


def test_a_reported_failure_is_not_an_end_until_decided() -> None:
    running = mark_dispatched(_run(), ["S1"])
    reported = _story_update(
        running,
        "S1",
        state="failed",
        awaiting_decision=True,
        failure_kind="verification",
        finished_at=now(),
    )
    assert transitions(running, reported).story_ends == ()

    retry = on_failure(reported, "S1", "verification", RetryBudget())
    assert retry.retry
    retried = apply_failure(reported, "S1", "verification", retry)
    found = transitions(reported, retried)
    assert found.story_ends == ()
    assert found.retries == (("light", "verification"),)

    final = on_failure(reported, "S1", "verification", RetryBudget(story_retries=0))
    given_up = apply_failure(reported, "S1", "verification", final)
    ends = transitions(reported, given_up).story_ends
    assert [(e.outcome, e.tier) for e in ends] == [("failed", "light"), ("blocked", "standard")]
    assert ends[0].duration_s is not None and ends[1].duration_s is None


def test_cancelling_ends_pending_stories_and_the_run() -> None:
    run = mark_dispatched(_run(), ["S3"])
    cancelled = cancel(run)
    assert cancelled is not None
    found = transitions(run, cancelled)
    assert found.run_finished == "cancelled"
    assert sorted((e.outcome, e.tier) for e in found.story_ends) == [
        ("cancelled", "light"),
        ("cancelled", "standard"),
    ]  # S3 was running: it ends when its runner reports back
    reported = _story_update(
        cancelled, "S3", state="failed", awaiting_decision=True, failure_kind="cancelled"
    )
    decision = on_failure(reported, "S3", "cancelled", RetryBudget())
    decided = apply_failure(reported, "S3", "cancelled", decision)
    assert [e.outcome for e in transitions(reported, decided).story_ends] == ["cancelled"]
    assert transitions(decided, decided).run_finished is None


# --- the web side's pure parts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (202, b'{"queued":"d1"}', ("queued", True)),
        (200, b'{"duplicate":"d1"}', ("duplicate", True)),
        (202, b'{"ignored":"event push is not handled"}', ("ignored", True)),
        (200, b'{"ok":true,"event":"ping"}', ("ping", True)),
        (401, b"", ("bad_signature", False)),
        (413, b'{"error":"payload too large"}', ("too_large", False)),
        (400, b'{"error":"body is not JSON"}', ("malformed", True)),
        (400, b"", ("disconnected", False)),
        (503, b'{"error":"queue unavailable"}', ("queue_unavailable", True)),
        (500, b"oops", ("http_500", True)),
    ],
)
def test_delivery_outcomes(status: int, body: bytes, expected: tuple[str, bool]) -> None:
    assert delivery_outcome(status, body) == expected


def test_bearer_token_check() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("bearer s3cret", "s3cret")
    assert not bearer_matches("Bearer s3cret2", "s3cret")
    assert not bearer_matches("Basic s3cret", "s3cret")
    assert not bearer_matches("s3cret", "s3cret")
    assert not bearer_matches(None, "s3cret")
    assert not bearer_matches("Bearer ", "s3cret")


# --- rendering ------------------------------------------------------------------------------


def _histogram_fields(spec_buckets: dict[str, float], labels: dict[str, str]) -> dict[str, str]:
    enc = encode_labels(labels)
    return {f"{enc}|{k}": str(v) for k, v in spec_buckets.items()}


def test_rendering_a_known_snapshot_parses_back() -> None:
    at = 1_800_000_000.0
    duration = _histogram_fields(
        {"60.0": 2, "300.0": 1, "+Inf": 1, "sum": 9000.5, "count": 4},
        {"outcome": "landed", "tier": "light"},
    )
    snapshot = Snapshot(
        hashes={
            DELIVERIES.name: {
                encode_labels({"event": "issues", "outcome": "queued"}): "3",
                encode_labels({"event": "unverified", "outcome": "bad_signature"}): "1",
                "garbage": "7",  # never written by us: skipped, not fatal
            },
            STORIES.name: {encode_labels({"outcome": "landed", "tier": "light"}): "4"},
            MODEL_TOKENS.name: {
                encode_labels({"model": 'm "1"', "kind": "input"}): "1500.0",
            },
            STORY_DURATION.name: duration,
            RATE_LIMIT.name: {
                encode_labels({"installation": "7", "resource": "core"}): f"[4990, {at - 5}]",
                encode_labels({"installation": "8", "resource": "core"}): (
                    f"[12, {at - GAUGE_MAX_AGE_SECONDS - 1}]"  # stale: not shown
                ),
            },
        },
        runners=[RunnerInfo(slots=2, busy=1), RunnerInfo(slots=2, busy=0)],
        run_states={"running": 2, "planning": 1},
        at=at,
    )
    text = render(snapshot).decode()
    found = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in found.values()
        for s in f.samples
    }

    assert found["baro_webhook_deliveries"].type == "counter"
    assert (
        samples[("baro_webhook_deliveries_total", (("event", "issues"), ("outcome", "queued")))]
        == 3
    )
    assert (
        samples[
            (
                "baro_webhook_deliveries_total",
                (("event", "unverified"), ("outcome", "bad_signature")),
            )
        ]
        == 1
    )
    assert len(found["baro_webhook_deliveries"].samples) == 2
    assert samples[("baro_stories_total", (("outcome", "landed"), ("tier", "light")))] == 4
    assert samples[("baro_model_tokens_total", (("kind", "input"), ("model", 'm "1"')))] == 1500

    light = (("outcome", "landed"), ("tier", "light"))
    assert found["baro_story_duration_seconds"].type == "histogram"
    assert samples[("baro_story_duration_seconds_bucket", (("le", "30.0"), *light))] == 0
    assert samples[("baro_story_duration_seconds_bucket", (("le", "60.0"), *light))] == 2
    assert samples[("baro_story_duration_seconds_bucket", (("le", "300.0"), *light))] == 3
    assert samples[("baro_story_duration_seconds_bucket", (("le", "7200.0"), *light))] == 3
    assert samples[("baro_story_duration_seconds_bucket", (("le", "+Inf"), *light))] == 4
    assert samples[("baro_story_duration_seconds_count", light)] == 4
    assert samples[("baro_story_duration_seconds_sum", light)] == 9000.5

    assert found["baro_github_rate_limit_remaining"].type == "gauge"
    rate = found["baro_github_rate_limit_remaining"].samples
    assert [(s.labels, s.value) for s in rate] == [
        ({"installation": "7", "resource": "core"}, 4990)
    ]

    assert samples[("baro_runs", (("state", "running"),))] == 2
    assert samples[("baro_runs", (("state", "planning"),))] == 1
    assert samples[("baro_runs", (("state", "queued"),))] == 0
    assert ("baro_runs", (("state", "done"),)) not in samples  # finished runs: the counter
    assert samples[("baro_runners", ())] == 2
    assert samples[("baro_runners_busy", ())] == 1
    assert samples[("baro_runner_slots", ())] == 4
    assert samples[("baro_runner_slots_busy", ())] == 1
    # Every family is announced even without samples, so dashboards see the names.
    assert found["baro_model_cost_dollars"].samples == []
    assert "# TYPE baro_story_queue_wait_seconds histogram" in text
