"""The benchmark's plan shapes, scripted story turns and lower bounds (pure: no I/O).

Kept apart from `schedule.py` (which runs the real processes) so the shapes and the bound
arithmetic can be read and changed on their own.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any

# --- shapes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    id: str
    title: str
    deps: tuple[str, ...] = ()
    heavy: bool = False


@dataclass(frozen=True)
class Shape:
    key: str
    name: str
    nodes: tuple[Node, ...]
    runs: int = 1
    """How many issues get this plan at once (shape c: 4 × 25 stories)."""
    installations: int = 1
    """Installations the runs are spread over (one repository each), round-robin."""


def _n(sid: str, title: str, *deps: str, heavy: bool = False) -> Node:
    return Node(sid, title, tuple(deps), heavy)


RESERVATIONS = (
    _n("S1", "ReservationStatus enum"),
    _n("S2", "Reservation entity", "S1", heavy=True),
    _n("S3", "Reservation DTOs", "S1"),
    _n("S4", "Flyway migration for reservations", "S2", heavy=True),
    _n("S5", "Reservation repository", "S2"),
    _n("S6", "Reservation mapper", "S2", "S3"),
    _n("S7", "Reservation service", "S5", "S6", heavy=True),
    _n("S8", "Reservation controller", "S3", "S6"),
    _n("S9", "Repository spec", "S5"),
    _n("S10", "Mapper spec", "S6"),
)

TWENTY_FOUR = (
    # level 1
    _n("S1", "Domain schema", heavy=True),
    _n("S2", "Configuration loader"),
    _n("S3", "Structured logging"),
    # level 2
    _n("S4", "Customer model", "S1"),
    _n("S5", "Order model", "S1"),
    _n("S6", "Product model", "S1"),
    _n("S7", "Settings validation", "S2"),
    _n("S8", "Request logging middleware", "S3", heavy=True),
    _n("S9", "Audit log sink", "S3", "S2"),
    # level 3
    _n("S10", "Order pricing rules", "S5", "S6", heavy=True),
    _n("S11", "Customer repository", "S4"),
    _n("S12", "Order repository", "S5"),
    _n("S13", "Product repository", "S6"),
    _n("S14", "Customer validation", "S4", "S7"),
    _n("S15", "Audit events for orders", "S5", "S9"),
    _n("S16", "Settings reference docs", "S7"),
    # level 4
    _n("S17", "Checkout service", "S10", "S12", heavy=True),
    _n("S18", "Customer service", "S11", "S14"),
    _n("S19", "Catalogue service", "S13"),
    _n("S20", "Logging docs", "S8", "S16"),
    # level 5
    _n("S21", "Checkout API", "S17", "S18"),
    _n("S22", "Catalogue API", "S19"),
    _n("S23", "Checkout spec", "S17"),
    # level 6
    _n("S24", "End-to-end checkout spec", "S21", "S22"),
)

WIDE = (
    _n("S1", "Shared module"),
    *(_n(f"S{i}", f"Handler {i - 1}", "S1") for i in range(2, 25)),
    _n("S25", "Registry of all handlers", *(f"S{i}" for i in range(2, 25))),
)

ANCHOR = (
    # the shape the product's anchor run was measured on: three chains of two
    _n("S1", "Parser"),
    _n("S2", "Storage"),
    _n("S3", "Renderer"),
    _n("S4", "Parser tests", "S1"),
    _n("S5", "Storage tests", "S2"),
    _n("S6", "Renderer tests", "S3"),
)


def _two_levels(width: int) -> tuple[Node, ...]:
    """`width` roots, each with one dependent: two levels of `width`."""
    roots = tuple(_n(f"S{i}", f"Module {i}") for i in range(1, width + 1))
    kids = tuple(_n(f"S{width + i}", f"Module {i} tests", f"S{i}") for i in range(1, width + 1))
    return roots + kids


FLAT_TEN = tuple(_n(f"S{i}", f"Module {i}") for i in range(1, 11))

SHAPES: dict[str, Shape] = {
    "a": Shape("a", "reservations-10", RESERVATIONS),
    "b": Shape("b", "layered-24", TWENTY_FOUR),
    "c": Shape("c", "wide-4x25", WIDE, runs=4),
    "anchor": Shape("anchor", "anchor-6", ANCHOR),
    "two5": Shape("two5", "two-levels-of-5", _two_levels(5)),
    "flat10": Shape("flat10", "flat-10", FLAT_TEN),
    "two12": Shape("two12", "two-levels-of-12", _two_levels(12)),
    "fair": Shape("fair", "fair-50x10", _two_levels(5), runs=50, installations=5),
}


def _path(node: Node) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", node.title.lower()).strip("_")
    return f"work/{node.id.lower()}_{slug}.txt"


def _seconds(node: Node, story_s: float, heavy_factor: float) -> float:
    return story_s * (heavy_factor if node.heavy else 1.0)


def _plan(shape: Shape) -> dict[str, Any]:
    return {
        "summary": f"Benchmark plan {shape.name}.",
        "design_note": "Each story writes one text file under work/.",
        "stories": [
            {
                "id": n.id,
                "title": n.title,
                "description": f"Create {_path(n)}.",
                "depends_on": list(n.deps),
                "writes": [_path(n)],
                "acceptance": [f"{_path(n)} exists"],
                "tests": [f"test -f {_path(n)}"],
                "tier": "heavy" if n.heavy else "light",
            }
            for n in shape.nodes
        ],
    }


def _story_turns(node: Node, seconds: float, rounds: int = 2) -> list[dict[str, Any]]:
    """`rounds` model calls that add up to `seconds`: create the file, look at it again
    (rounds beyond two), finish."""
    path = _path(node)
    each = seconds / max(2, rounds)
    looks = [
        {
            "tool_calls": [{"name": "editor", "arguments": {"command": "view", "path": path}}],
            "usage": {"input": 900, "cached": 800, "output": 20},
            "latency": each,
        }
        for _ in range(max(0, rounds - 2))
    ]
    return [
        {
            "tool_calls": [
                {
                    "name": "editor",
                    "arguments": {
                        "command": "create",
                        "path": path,
                        "file_text": f"{node.id}: {node.title}\n",
                    },
                }
            ],
            "usage": {"input": 800, "output": 60},
            "latency": each,
        },
        *looks,
        {
            "tool_calls": [{"name": "finish", "arguments": {"summary": f"Created {path}."}}],
            "usage": {"input": 100, "cached": 800, "output": 20},
            "latency": each,
        },
    ]


def _script(
    shape: Shape, titles: list[str], story_s: float, heavy: float, rounds: int = 2
) -> dict[str, Any]:
    plan = _plan(shape)
    return {
        "rules": [
            *(
                {
                    "name": f"plan-{i}",
                    "match": {"system": "baro's planner", "first_user": re.escape(title)},
                    "turns": [{"tool_calls": [{"name": "submit_plan", "arguments": plan}]}],
                }
                for i, title in enumerate(titles)
            ),
            *(
                {
                    "name": n.id,
                    "match": {"first_user": f"Implement story {n.id}:"},
                    "turns": _story_turns(n, _seconds(n, story_s, heavy), rounds),
                }
                for n in shape.nodes
            ),
        ]
    }


# --- bounds (pure) --------------------------------------------------------------------------


def _union(
    shape: Shape, story_s: float, heavy: float, verify_s: float = 0.0
) -> tuple[dict[str, list[str]], dict[str, float]]:
    """The DAG of all the shape's runs as one graph (ids prefixed per run) and durations."""
    deps: dict[str, list[str]] = {}
    dur: dict[str, float] = {}
    for r in range(shape.runs):
        for n in shape.nodes:
            deps[f"{r}:{n.id}"] = [f"{r}:{d}" for d in n.deps]
            # `verify:` runs inside every story (after its own tests): on its critical path
            dur[f"{r}:{n.id}"] = _seconds(n, story_s, heavy) + verify_s
    return deps, dur


def _remaining(deps: dict[str, list[str]], dur: dict[str, float]) -> dict[str, float]:
    from app.core.dag import topological_order

    kids: dict[str, list[str]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in ds:
            kids[d].append(k)
    out: dict[str, float] = {}
    for k in reversed(topological_order(deps)):
        out[k] = dur[k] + max((out[c] for c in kids[k]), default=0.0)
    return out


def _pack(durations: list[float], slots: int) -> float:
    """Makespan of independent jobs on `slots`, longest first."""
    ends = [0.0] * slots
    for d in sorted(durations, reverse=True):
        heapq.heappush(ends, heapq.heappop(ends) + d)
    return max(ends)


def _list_schedule(deps: dict[str, list[str]], dur: dict[str, float], slots: int) -> float:
    """Ready-set admission without overhead: a free slot takes the ready story with the
    longest remaining path (what app/core/scheduler.py does, with real durations)."""
    remaining = _remaining(deps, dur)
    order = {k: i for i, k in enumerate(deps)}
    waiting = {k: set(ds) for k, ds in deps.items()}
    ready = [(-remaining[k], order[k], k) for k, ds in waiting.items() if not ds]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    clock = 0.0
    done = 0
    while done < len(deps):
        while ready and len(running) < slots:
            _, _, k = heapq.heappop(ready)
            heapq.heappush(running, (clock + dur[k], k))
        clock, k = heapq.heappop(running)
        done += 1
        for other, ds in waiting.items():
            if k in ds:
                ds.discard(k)
                if not ds:
                    heapq.heappush(ready, (-remaining[other], order[other], other))
    return clock


def bounds(
    shape: Shape, slots: int, story_s: float, heavy: float, verify_s: float = 0.0
) -> dict[str, Any]:
    """`bound_s` counts the in-story `verify:`; `bound_final_s` adds the final verification
    the run makes once every story landed (what the issue's ratios divide by)."""
    from app.core.dag import levels

    deps, dur = _union(shape, story_s, heavy, verify_s)
    critical = max(_remaining(deps, dur).values())
    work = sum(dur.values())
    barrier = sum(_pack([dur[k] for k in level], slots) for level in levels(deps))
    return {
        "levels": [len(level) for level in levels(deps)],
        "critical_path_s": round(critical, 2),
        "total_work_s": round(work, 2),
        "bound_s": round(max(critical, work / slots), 2),
        "level_barrier_s": round(barrier, 2),
        "ideal_list_s": round(_list_schedule(deps, dur, slots), 2),
        "verify_s": verify_s,
        "bound_final_s": round(max(critical, work / slots) + verify_s, 2),
    }
