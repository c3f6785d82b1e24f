"""Every Redis key baro uses, in one place: the layout of the shared store.

All keys start with `baro:`, so one Redis can be shared with other applications and an
operator can list (or flush) baro's state with one pattern. Nothing else spells a key.
"""

from __future__ import annotations

PREFIX = "baro:"

# --- arq queues ------------------------------------------------------------------------------
ORCHESTRATOR_QUEUE = "baro:orchestrator"
RUNNER_QUEUE = "baro:runner"

# --- webhook intake --------------------------------------------------------------------------
PENDING_TRIGGERS = "baro:triggers:pending"
"""Sorted set: delivery id → when its trigger was (re-)queued."""
TRIGGER_PAYLOADS = "baro:triggers:payload"
"""Hash: delivery id → the trigger as JSON."""
TRIGGER_ATTEMPTS = "baro:triggers:attempts"
"""Hash: delivery id → re-enqueues so far."""


def delivery(delivery_id: str) -> str:
    """Set once per `X-GitHub-Delivery`: the dedup of the web process."""
    return f"baro:delivery:{delivery_id}"


def trigger_done(delivery_id: str) -> str:
    return f"baro:trigger:done:{delivery_id}"


# --- runs ------------------------------------------------------------------------------------
ACTIVE_RUNS = "baro:runs:active"
"""Set of the ids of runs that are not finished (the reaper's work list)."""
RUN_LOADS = "baro:runs:loads"
"""Hash run id → `installation:state:running:pending`, written with each active run's record
(in the same transaction), so fair share reads every run's load in one small command."""


DISPATCH_LOCK = "baro:dispatch:lock"
"""Held while one worker admits stories, so the fair-share count it reads stays true."""
WAITING_FOR_CAPACITY = "baro:runs:waiting-since"
"""Sorted set of runs that had ready stories but no free slot, scored by when they were first
held back: the longest waiting goes first when a slot frees."""


def run(run_id: str) -> str:
    """The run record (JSON, compare-and-set on its version)."""
    return f"baro:run:{run_id}"


def run_events(run_id: str) -> str:
    """Stream: the run's append-only event log."""
    return f"baro:run:{run_id}:events"


def check_run(run_id: str) -> str:
    """The run's check run as last written (`app.core.check_run.CheckRef`, JSON)."""
    return f"baro:run:{run_id}:check"


def issue_active(issue_key: str) -> str:
    """Which run an issue has right now (one at a time)."""
    return f"baro:issue:{issue_key}:active"


def branch_claim(owner: str, repo: str, branch: str) -> str:
    """Which run adds to a branch right now (a follow-up and a retry never both)."""
    return f"baro:branch:{owner.lower()}/{repo.lower()}:{branch}"


def lease(run_id: str, scope: str) -> str:
    """Who works on a story (or a run's planning, verification, an intake) right now."""
    return f"baro:lease:{run_id}:{scope}"


def attempt_started(run_id: str, story_id: str, attempt: int) -> str:
    """Set by the first runner that starts an attempt: a later delivery of the same job knows
    an earlier one may have pushed already."""
    return f"baro:started:{run_id}:{story_id}:{attempt}"


def branch_head(run_id: str) -> str:
    """The run branch's head as the last landing turn pushed it."""
    return f"baro:head:{run_id}"


def landing_turn(run_id: str) -> str:
    """Held by the runner whose story is fetching, merging and pushing onto the run branch."""
    return f"baro:landing:{run_id}"


def landing_line(run_id: str) -> str:
    """Stories of the run whose commit is ready, waiting for the landing turn (ticket → what
    the holder needs to push it along with its own)."""
    return f"baro:landing-line:{run_id}"


def landed_in_line(run_id: str, ticket: str) -> str:
    """The sha a turn holder pushed for a story that waited in line (a list its runner
    blocks on)."""
    return f"baro:landed:{run_id}:{ticket}"


def landing_free(run_id: str) -> str:
    """Pushed to when the landing turn is released: wakes one story waiting for it."""
    return f"baro:landing-free:{run_id}"


def transcript(run_id: str, story_id: str, attempt: int) -> str:
    """A story attempt's conversation, kept a week for debugging."""
    return f"baro:transcript:{run_id}:{story_id}:{attempt}"


def once(name: str) -> str:
    """Marks that something happened within a window (finalize retries)."""
    return f"baro:once:{name}"


def render_window(run_id: str) -> str:
    """Set while a run's tracking comment was edited within its debounce window."""
    return f"baro:render:{run_id}"


def render_edits(run_id: str) -> str:
    """How many debounced edits of a run's tracking comment were made (the window grows)."""
    return f"baro:render:{run_id}:edits"


# --- redelivery of failed webhooks -------------------------------------------------------------
REDELIVERY_LOCK = "baro:redelivery:lock"
REDELIVERY_DUE = "baro:redelivery:due"


def redelivery_asked(guid: str) -> str:
    return f"baro:redelivery:asked:{guid}"


# --- metrics and presence ------------------------------------------------------------------
METRICS_PREFIX = "baro:metrics:"
RUNNERS = "baro:metrics:runners"
"""Hash: runner id → its slots, busy slots and when the entry expires (read without SCAN)."""


def metric(kind: str, name: str) -> str:
    return f"{METRICS_PREFIX}{kind}:{name}"


# --- GitHub API cache ------------------------------------------------------------------------
GITHUB_CACHE_PREFIX = "baro:githubkit"
"""githubkit's conditional-request cache (ETags)."""
