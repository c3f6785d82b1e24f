"""DAG algorithms on a diamond, a 6-story plan and plain mappings."""

from __future__ import annotations

import pytest

from app.core import dag
from app.core.plan import Plan, Story, Tier


def make_plan(spec: list[tuple[str, list[str], Tier]]) -> Plan:
    return Plan(
        summary="s",
        design_note="n",
        stories=[
            Story(
                id=sid,
                title=f"T{sid}",
                description="d",
                depends_on=deps,
                writes=[f"{sid}.py"],
                acceptance=["a"],
                tier=tier,
            )
            for sid, deps, tier in spec
        ],
    )


DIAMOND = make_plan(
    [
        ("S1", [], "light"),
        ("S2", ["S1"], "standard"),
        ("S3", ["S1"], "heavy"),
        ("S4", ["S2", "S3"], "light"),
    ]
)

# S1 → {S2, S3} → S4 → {S5, S6}; S2 and S5/S6 tie on weight.
SIX = make_plan(
    [
        ("S1", [], "light"),
        ("S2", ["S1"], "standard"),
        ("S3", ["S1"], "light"),
        ("S4", ["S2", "S3"], "heavy"),
        ("S5", ["S4"], "standard"),
        ("S6", ["S4"], "standard"),
    ]
)


def test_diamond_levels_width_and_critical_path() -> None:
    assert dag.levels(DIAMOND) == [["S1"], ["S2", "S3"], ["S4"]]
    assert dag.width(DIAMOND) == 2
    assert dag.topological_order(DIAMOND) == ["S1", "S2", "S3", "S4"]
    assert dag.critical_path(DIAMOND) == (["S1", "S3", "S4"], 5)


def test_six_story_plan() -> None:
    assert dag.levels(SIX) == [["S1"], ["S2", "S3"], ["S4"], ["S5", "S6"]]
    assert dag.width(SIX) == 2
    # S2 beats S3 on weight; S5 and S6 tie, so plan order decides.
    assert dag.critical_path(SIX) == (["S1", "S2", "S4", "S5"], 8)
    assert dag.remaining_path_length(SIX) == {
        "S1": 8,
        "S2": 7,
        "S3": 6,
        "S4": 5,
        "S5": 2,
        "S6": 2,
    }


def test_custom_weights() -> None:
    path, length = dag.critical_path(SIX, {"light": 10, "standard": 1, "heavy": 1})
    assert path == ["S1", "S3", "S4", "S5"]
    assert length == 22


def test_levels_are_longest_distance_not_first_seen() -> None:
    graph = {"S1": [], "S2": ["S1"], "S3": ["S2"], "S4": ["S1", "S3"]}
    assert dag.levels(graph) == [["S1"], ["S2"], ["S3"], ["S4"]]


def test_ready_set_progression() -> None:
    landed: set[str] = set()
    assert dag.ready_set(SIX, landed=landed) == ["S1"]
    assert dag.ready_set(SIX, landed=landed, running={"S1"}) == []
    landed.add("S1")
    assert dag.ready_set(SIX, landed=landed) == ["S2", "S3"]
    assert dag.ready_set(SIX, landed=landed, running={"S2"}) == ["S3"]
    landed |= {"S2"}
    assert dag.ready_set(SIX, landed=landed, running={"S3"}) == []
    landed |= {"S3"}
    assert dag.ready_set(SIX, landed=landed) == ["S4"]
    landed |= {"S4"}
    assert dag.ready_set(SIX, landed=landed, excluded={"S5"}) == ["S6"]
    assert dag.ready_set(SIX, landed=landed | {"S5", "S6"}) == []


def test_ready_set_never_starts_dependents_of_a_failed_story() -> None:
    ready = dag.ready_set(SIX, landed={"S1", "S3"}, excluded={"S2"})
    assert ready == []


def test_dependency_closure() -> None:
    assert dag.dependency_closure(SIX, "S2") == ["S4", "S5", "S6"]
    assert dag.dependency_closure(SIX, "S1") == ["S2", "S3", "S4", "S5", "S6"]
    assert dag.dependency_closure(SIX, "S6") == []
    with pytest.raises(KeyError):
        dag.dependency_closure(SIX, "S9")


def test_dependents() -> None:
    assert dag.dependents(DIAMOND) == {"S1": ["S2", "S3"], "S2": ["S4"], "S3": ["S4"], "S4": []}


def test_find_cycle() -> None:
    assert dag.find_cycle({"S1": [], "S2": ["S1"]}) is None
    assert dag.find_cycle({"S1": ["S3"], "S2": ["S1"], "S3": ["S2"]}) == ["S1", "S3", "S2", "S1"]
    assert dag.find_cycle({"S1": ["S1"]}) == ["S1", "S1"]
    assert dag.find_cycle({"S1": ["S9"]}) is None


def test_mappings_are_checked() -> None:
    with pytest.raises(ValueError, match="cycle: S1 → S2 → S1"):
        dag.levels({"S1": ["S2"], "S2": ["S1"]})
    with pytest.raises(ValueError, match="unknown story"):
        dag.levels({"S1": ["S9"]})


def test_empty_graph() -> None:
    assert dag.levels({}) == []
    assert dag.width({}) == 0
    assert dag.topological_order({}) == []


def test_large_chain_is_linear() -> None:
    n = 20_000
    graph = {f"S{i}": ([f"S{i - 1}"] if i > 1 else []) for i in range(1, n + 1)}
    assert len(dag.levels(graph)) == n
    assert dag.dependency_closure(graph, "S1")[-1] == f"S{n}"
    assert dag.find_cycle(graph) is None
