"""Graph algorithms over a plan's stories (pure, O(V+E)).

Every function takes either a `Plan` or a mapping `story id -> ids it depends on`. Results
are deterministic: ties are broken by the order stories appear in the plan (or mapping), so
comments, schedules and tests never flap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence, Set
from typing import Protocol, TypeAlias


class StoryLike(Protocol):
    """What the graph needs of a story (`app.core.plan.Story` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def depends_on(self) -> Sequence[str]: ...

    @property
    def tier(self) -> str: ...


class Plan(Protocol):
    """What the graph needs of a plan (`app.core.plan.Plan` is one); a protocol, so the
    models can use these algorithms without the two modules importing each other."""

    @property
    def stories(self) -> Sequence[StoryLike]: ...


__all__ = [
    "TIER_WEIGHTS",
    "DagLike",
    "critical_path",
    "dependency_closure",
    "dependents",
    "find_cycle",
    "levels",
    "ready_set",
    "remaining_path_length",
    "topological_order",
    "width",
]

DagLike: TypeAlias = "Plan | Mapping[str, Sequence[str]]"

#: Relative cost of a story by tier, used for the critical path and scheduling priority.
TIER_WEIGHTS: Mapping[str, int] = {"light": 1, "standard": 2, "heavy": 3}


def _deps(dag: DagLike) -> dict[str, list[str]]:
    """Normalise to id -> unique deps (in order); reject unknown ids."""
    items: list[tuple[str, Sequence[str]]]
    if isinstance(dag, Mapping):
        items = list(dag.items())
    else:
        items = [(s.id, s.depends_on) for s in dag.stories]
    graph = {node: list(dict.fromkeys(deps)) for node, deps in items}
    for node, deps in graph.items():
        for dep in deps:
            if dep not in graph:
                raise ValueError(f"{node} depends on unknown story {dep!r}")
    return graph


def dependents(dag: DagLike) -> dict[str, list[str]]:
    """id -> stories that depend on it directly (the reverse edges), in plan order."""
    graph = _deps(dag)
    out: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in deps:
            out[dep].append(node)
    return out


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One dependency cycle as a closed path `[a, b, …, a]` (a depends on b …), else None.

    Unknown dependency ids are ignored here; callers report them separately.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        iters = [iter(deps[root])]
        colour[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            state = colour.get(nxt)
            if state is None or state == black:
                continue
            if state == grey:
                return [*path[path.index(nxt) :], nxt]
            colour[nxt] = grey
            path.append(nxt)
            iters.append(iter(deps[nxt]))
    return None


def _levels_of(graph: Mapping[str, list[str]]) -> dict[str, int]:
    """Longest distance (in edges) from a story with no dependencies; Kahn's algorithm."""
    children: dict[str, list[str]] = {node: [] for node in graph}
    indegree = {node: len(deps) for node, deps in graph.items()}
    for node, deps in graph.items():
        for dep in deps:
            children[dep].append(node)
    level = dict.fromkeys(graph, 0)
    queue = deque(node for node, n in indegree.items() if n == 0)
    seen = 0
    while queue:
        node = queue.popleft()
        seen += 1
        for child in children[node]:
            level[child] = max(level[child], level[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                queue.append(child)
    if seen != len(graph):
        cycle = find_cycle(graph) or []
        raise ValueError("cycle: " + " → ".join(cycle))
    return level


def levels(dag: DagLike) -> list[list[str]]:
    """Stories grouped by depth: level 0 has no dependencies, level k waits on level k-1."""
    graph = _deps(dag)
    level = _levels_of(graph)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in graph:  # plan order inside a level
        out[level[node]].append(node)
    return out


def topological_order(dag: DagLike) -> list[str]:
    """Level by level, plan order inside a level: every story after all its dependencies."""
    return [node for level in levels(dag) for node in level]


def width(dag: DagLike) -> int:
    """The largest level: how many stories can run at once at best."""
    return max((len(level) for level in levels(dag)), default=0)


def _story_weights(plan: Plan, weights: Mapping[str, int]) -> dict[str, int]:
    return {s.id: weights[s.tier] for s in plan.stories}


def remaining_path_length(plan: Plan, weights: Mapping[str, int] = TIER_WEIGHTS) -> dict[str, int]:
    """Per story: the heaviest weighted path from it (inclusive) to the end of the DAG.

    Scheduling the ready story with the largest value first shortens the run the most.
    """
    order = topological_order(plan)
    kids = dependents(plan)
    cost = _story_weights(plan, weights)
    remaining: dict[str, int] = {}
    for node in reversed(order):
        remaining[node] = cost[node] + max((remaining[c] for c in kids[node]), default=0)
    return {node: remaining[node] for node in order}


def critical_path(plan: Plan, weights: Mapping[str, int] = TIER_WEIGHTS) -> tuple[list[str], int]:
    """The heaviest dependency chain and its total weight: a lower bound on wall time.

    Ties go to the story that comes first in topological order.
    """
    order = topological_order(plan)
    if not order:
        return [], 0
    rank = {node: i for i, node in enumerate(order)}
    remaining = remaining_path_length(plan, weights)
    kids = dependents(plan)

    def best(candidates: Sequence[str]) -> str:
        return min(candidates, key=lambda n: (-remaining[n], rank[n]))

    node = best(order)
    path = [node]
    while kids[node]:
        node = best(kids[node])
        path.append(node)
    return path, remaining[path[0]]


def ready_set(
    dag: DagLike,
    *,
    landed: Set[str],
    running: Set[str] = frozenset(),
    excluded: Set[str] = frozenset(),
) -> list[str]:
    """Stories not started whose dependencies have all landed, in topological order.

    `excluded` holds stories that must not start (failed, blocked, cancelled).
    """
    graph = _deps(dag)
    started = landed | running | excluded
    return [
        node
        for node in topological_order(graph)
        if node not in started and all(dep in landed for dep in graph[node])
    ]


def dependency_closure(dag: DagLike, story_id: str) -> list[str]:
    """Every story that depends on `story_id`, directly or not (what a failure blocks).

    Excludes `story_id` itself; topological order.
    """
    kids = dependents(dag)
    if story_id not in kids:
        raise KeyError(story_id)
    seen: set[str] = set()
    stack = list(kids[story_id])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(kids[node])
    return [node for node in topological_order(dag) if node in seen]
