"""Usage normalisation feeds pricing; unknown prices stay unknown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from app.llm import anthropic, openai_chat, openai_responses
from app.llm.prices import PriceError, cost, load_prices
from app.llm.types import Usage

MONDAY_PEAK = datetime(2026, 11, 16, 2, 30, tzinfo=UTC)  # Monday, inside 01:00–04:00
MONDAY_GAP = datetime(2026, 11, 16, 4, 0, tzinfo=UTC)  # between the windows
MONDAY_MORNING = datetime(2026, 11, 16, 9, 59, tzinfo=UTC)  # inside 06:00–10:00
MONDAY_NOON = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
SATURDAY_PEAK_HOUR = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)
M = Decimal(1_000_000)


def test_shipped_table_is_dated_and_covers_the_documented_models() -> None:
    table = load_prices()
    assert str(table.as_of) == "2026-11-15" and table.currency == "USD"
    for name in (
        "deepseek-flash",
        "deepseek-v4-flash",
        "deepseek-v4-pro",
        "claude-sonnet-5-5",
        "claude-opus-5-5",
        "claude-haiku-5-5",
    ):
        assert table.lookup(name) is not None, name
    assert table.lookup("deepseek-v4-flash") is table.lookup("deepseek-flash")
    gpt = table.lookup("gpt-5.5")
    assert gpt is not None and gpt.example


def test_openai_usage_prompt_minus_cached() -> None:
    usage = openai_chat.parse_usage(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1500},
            "completion_tokens_details": {"reasoning_tokens": 100},
        }
    )
    assert usage == Usage(uncached_input=500, cache_read=1500, output=300, reasoning=100)
    expected = (500 * Decimal("1.25") + 1500 * Decimal("0.125") + 300 * 10) / M
    assert cost(usage, "gpt-5.5", MONDAY_NOON) == expected
    responses = openai_responses.parse_usage(
        {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 1500},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 100},
        }
    )
    assert responses == usage


def test_deepseek_peak_and_off_peak() -> None:
    usage = openai_chat.parse_usage(
        {
            "prompt_tokens": 10_000,
            "completion_tokens": 2_000,
            "prompt_cache_hit_tokens": 8_000,
            "prompt_cache_miss_tokens": 2_000,
        }
    )
    assert (usage.uncached_input, usage.cache_read, usage.output) == (2_000, 8_000, 2_000)
    off_peak = (2_000 * Decimal("0.15") + 8_000 * Decimal("0.003") + 2_000 * Decimal("0.60")) / M
    peak = (2_000 * Decimal("0.30") + 8_000 * Decimal("0.006") + 2_000 * Decimal("1.20")) / M
    assert cost(usage, "deepseek-flash", MONDAY_NOON) == off_peak == Decimal("0.001524")
    assert cost(usage, "deepseek-v4-flash", MONDAY_PEAK) == peak == Decimal("0.003048")
    assert cost(usage, "deepseek-flash", MONDAY_MORNING) == peak
    assert cost(usage, "deepseek-flash", MONDAY_GAP) == off_peak
    assert cost(usage, "deepseek-flash", SATURDAY_PEAK_HOUR) == off_peak
    pro_peak = (2_000 * Decimal("1.32") + 8_000 * Decimal("0.044") + 2_000 * Decimal("3.96")) / M
    assert cost(usage, "deepseek-v4-pro", MONDAY_PEAK) == pro_peak


def test_peak_uses_utc_for_aware_times() -> None:
    usage = Usage(output=1_000_000)
    tokyo = timezone(timedelta(hours=9))
    # 11:30 in Tokyo on Monday is 02:30 UTC Monday: peak.
    assert cost(usage, "deepseek-flash", datetime(2026, 11, 16, 11, 30, tzinfo=tokyo)) == Decimal(
        "1.20"
    )


def test_anthropic_cache_read_and_write() -> None:
    usage = anthropic.parse_usage(
        {
            "input_tokens": 21,
            "cache_creation_input_tokens": 188_086,
            "cache_read_input_tokens": 1_000,
            "output_tokens": 393,
        }
    )
    assert usage == Usage(uncached_input=21, cache_read=1_000, cache_write=188_086, output=393)
    expected = (21 * 2 + 1_000 * Decimal("0.10") + 188_086 * Decimal("2.50") + 393 * 10) / M
    assert cost(usage, "claude-sonnet-5-5", MONDAY_NOON) == expected
    opus = (21 * 4 + 1_000 * Decimal("0.20") + 188_086 * 5 + 393 * 20) / M
    assert cost(usage, "claude-opus-5-5-20261101", MONDAY_NOON) == opus


def test_haiku_rates_only_up_to_100k_prompt() -> None:
    small = Usage(uncached_input=50_000, cache_read=40_000, output=1_000)
    assert (
        cost(small, "claude-haiku-5-5", MONDAY_NOON)
        == (50_000 * Decimal("0.10") + 40_000 * Decimal("0.01") + 1_000 * Decimal("0.50")) / M
    )
    big = Usage(uncached_input=50_000, cache_read=60_000, output=1_000)
    assert cost(big, "claude-haiku-5-5", MONDAY_NOON) is None


def test_unknown_model_costs_unknown_not_zero() -> None:
    assert cost(Usage(uncached_input=10, output=10), "gpt-9", MONDAY_NOON) is None
    assert cost(Usage(), "gpt-9", MONDAY_NOON) is None
    assert cost(Usage(), "deepseek-flash", MONDAY_NOON) == Decimal(0)


def test_override_file_extends_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "as_of": "2027-01-01",
                "models": {
                    "my-local-model": {"input": 0, "cache_read": 0, "output": 0},
                    "claude-sonnet-5-5": {"input": 1, "cache_read": 0.1, "output": 5},
                },
            }
        )
    )
    table = load_prices(path)
    assert str(table.as_of) == "2027-01-01"
    assert cost(Usage(output=1_000_000), "my-local-model", MONDAY_NOON, table=table) == 0
    sonnet = Usage(cache_write=1_000_000)
    assert cost(sonnet, "claude-sonnet-5-5", MONDAY_NOON, table=table) == 1
    assert cost(Usage(output=1_000_000), "deepseek-v4-pro", MONDAY_NOON, table=table) == Decimal(
        "1.98"
    )


def test_bad_override_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"models": {"x": {"input": -1, "cache_read": 0, "output": 0}}}')
    with pytest.raises(PriceError, match="invalid price table"):
        load_prices(path)
    path2 = tmp_path / "eur.json"
    path2.write_text('{"currency": "EUR", "models": {}}')
    with pytest.raises(PriceError, match="currency"):
        load_prices(path2)
