"""Plan validation: a valid dict parses; every bad input yields its exact, readable error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.plan import MAX_STORIES, Plan, PlanStats, parse_plan


def story(sid: str, deps: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": sid,
        "title": f"Title of {sid}",
        "description": f"Do {sid}.",
        "depends_on": deps or [],
        "writes": [f"src/{sid.lower()}.py"],
        "acceptance": [f"{sid} works"],
        "tests": [f"tests/test_{sid.lower()}.py"],
        "tier": "standard",
    }
    raw.update(overrides)
    return raw


def plan(*stories: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "summary": "Add a thing.",
        "design_note": "Files: src/.",
        "stories": list(stories),
    }
    raw.update(overrides)
    return raw


def errors_of(raw: object) -> list[str]:
    result = parse_plan(raw)
    assert isinstance(result, list), f"expected errors, got a plan: {result!r}"
    return result


def test_valid_dict_parses() -> None:
    result = parse_plan(plan(story("S1"), story("S2", ["S1"], tier="light", tests=[])))
    assert isinstance(result, Plan)
    assert result.ids == ["S1", "S2"]
    assert result.story("S2").depends_on == ["S1"]
    assert result.story("S2").tier == "light"
    with pytest.raises(KeyError):
        result.story("S9")


def test_whitespace_is_stripped_and_duplicate_deps_collapse() -> None:
    result = parse_plan(plan(story("S1"), story(" S2 ", ["S1", "S1"], title="  Padded  ")))
    assert isinstance(result, Plan)
    assert result.story("S2").title == "Padded"
    assert result.story("S2").depends_on == ["S1"]


def test_json_text_and_fenced_json_parse() -> None:
    raw = plan(story("S1"))
    assert isinstance(parse_plan(json.dumps(raw)), Plan)
    assert isinstance(parse_plan("```json\n" + json.dumps(raw) + "\n```"), Plan)
    assert isinstance(parse_plan(json.dumps(raw).encode()), Plan)


def test_depends_on_and_tests_may_be_omitted() -> None:
    raw = story("S1")
    del raw["depends_on"], raw["tests"]
    result = parse_plan(plan(raw))
    assert isinstance(result, Plan)
    assert result.stories[0].depends_on == []
    assert result.stories[0].tests == []


def test_unknown_dependency() -> None:
    errors = errors_of(plan(story("S1"), story("S2"), story("S3", ["S9"])))
    assert errors == ['stories[2].depends_on: unknown story "S9"']


def test_cycle_is_reported_as_a_readable_path() -> None:
    errors = errors_of(
        plan(story("S1"), story("S2", ["S4"]), story("S3", ["S1"]), story("S4", ["S2"]))
    )
    assert errors == ["cycle: S2 → S4 → S2"]


def test_long_cycle_path() -> None:
    errors = errors_of(plan(story("S1", ["S3"]), story("S2", ["S1"]), story("S3", ["S2"])))
    assert errors == ["cycle: S1 → S3 → S2 → S1"]


def test_empty_title() -> None:
    errors = errors_of(plan(story("S1"), story("S2", title="   ")))
    assert errors == ["stories[1].title: must not be empty"]


def test_duplicate_id() -> None:
    errors = errors_of(plan(story("S1"), story("S3"), story("S3")))
    assert errors == ['stories[2].id: duplicate story id "S3" (also stories[1])']
    assert 'duplicate story id "S3"' in errors[0]


def test_too_many_and_too_few_stories() -> None:
    errors = errors_of(plan(*(story(f"S{i}") for i in range(1, 32))))
    assert errors == [f"too many stories: 31 (at most {MAX_STORIES})"]
    assert errors_of(plan()) == ["too few stories: 0 (at least 1)"]
    assert isinstance(parse_plan(plan(*(story(f"S{i}") for i in range(1, 26)))), Plan)


def test_unknown_tier() -> None:
    errors = errors_of(plan(story("S1", tier="mega")))
    assert errors == ['stories[0].tier: "mega" is not one of light, standard, heavy']


def test_self_dependency() -> None:
    errors = errors_of(plan(story("S1"), story("S2", ["S2"])))
    assert errors == ['stories[1].depends_on: a story may not depend on itself ("S2")']
    assert "a story may not depend on itself" in errors[0]


def test_required_lists() -> None:
    errors = errors_of(plan(story("S1", writes=[], acceptance=[])))
    assert errors == [
        "stories[0].writes: must have at least one entry",
        "stories[0].acceptance: must have at least one entry",
    ]


def test_empty_strings_inside_lists_and_bad_paths() -> None:
    errors = errors_of(plan(story("S1", acceptance=["ok", " "], writes=["/etc/passwd", "a/../b"])))
    assert errors == [
        'stories[0].writes[0]: "/etc/passwd" must be a path relative to the repository root',
        'stories[0].writes[1]: "a/../b" must be a path relative to the repository root',
        "stories[0].acceptance[1]: must not be empty",
    ]


def test_bad_story_id() -> None:
    errors = errors_of(plan(story("S0"), story("s2")))
    assert errors == [
        'stories[0].id: "S0" is not a story id (use S1, S2, S3, …)',
        'stories[1].id: "s2" is not a story id (use S1, S2, S3, …)',
    ]


def test_missing_fields_and_wrong_types() -> None:
    bad = story("S1", title=7, depends_on="S2")
    del bad["description"]
    errors = errors_of({"summary": "", "stories": [bad, "S2"]})
    assert errors == [
        "summary: must not be empty",
        "design_note: is required",
        "stories[0].title: must be a string, got 7",
        "stories[0].description: is required",
        'stories[0].depends_on: must be a list, got "S2"',
        'stories[1]: must be an object, got "S2"',
    ]


def test_graph_errors_come_with_field_errors_in_one_round() -> None:
    errors = errors_of(plan(story("S1", tier="mega"), story("S2", ["S9"])))
    assert errors == [
        'stories[0].tier: "mega" is not one of light, standard, heavy',
        'stories[1].depends_on: unknown story "S9"',
    ]


def test_not_an_object_or_not_json() -> None:
    assert errors_of([1, 2]) == [
        "plan: must be a JSON object with summary, design_note and stories, got [1, 2]"
    ]
    [error] = errors_of("{not json")
    assert error.startswith("plan: not valid JSON: ")


def test_error_list_is_capped() -> None:
    stories = (story(f"S{i}", title="", description="") for i in range(1, 26))
    errors = errors_of(plan(*stories, summary=""))
    assert len(errors) == 31
    assert errors[-1] == "… 21 more errors not shown"


def test_plan_constructor_enforces_graph_rules() -> None:
    ok = parse_plan(plan(story("S1")))
    assert isinstance(ok, Plan)
    with pytest.raises(ValueError, match="cycle: S1 → S2 → S1"):
        Plan.model_validate(plan(story("S1", ["S2"]), story("S2", ["S1"])))


def test_plan_round_trips_through_json() -> None:
    ok = parse_plan(plan(story("S1"), story("S2", ["S1"])))
    assert isinstance(ok, Plan)
    assert Plan.model_validate_json(ok.model_dump_json()) == ok


def test_plan_stats_total() -> None:
    stats = PlanStats(input_tokens=10, output_tokens=5)
    assert stats.total_tokens == 15
    assert stats.cost_usd is None
