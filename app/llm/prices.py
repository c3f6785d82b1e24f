"""Cost of a call from normalised usage and a dated price table.

The table is data (`prices.json`, overridable by a file named in settings); this
module is pure apart from reading that file once. An unknown model, or a prompt
outside the priced range, costs `None` (unknown), never 0.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.llm.types import Usage

Day = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_DAYS: tuple[Day, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_PER_MILLION = Decimal(1_000_000)
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


class PriceError(ValueError):
    """The price file is malformed."""


class Rates(BaseModel):
    """Per-1M-token rates; `cache_write` defaults to `input`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    output: Decimal = Field(ge=0)

    def cost(self, usage: Usage) -> Decimal:
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            usage.uncached_input * self.input
            + usage.cache_read * self.cache_read
            + usage.cache_write * write
            + usage.output * self.output
        )
        return total / _PER_MILLION


class PeakRates(Rates):
    """Rates that apply inside the listed UTC windows on the listed weekdays."""

    days: list[Day]
    hours_utc: list[tuple[time, time]]

    @field_validator("hours_utc")
    @classmethod
    def _ordered(cls, windows: list[tuple[time, time]]) -> list[tuple[time, time]]:
        for start, end in windows:
            if end <= start:
                raise ValueError(f"window {start}-{end} ends before it starts")
        return windows

    def applies(self, at: datetime) -> bool:
        """Half-open windows [start, end) on the UTC clock."""
        utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        if _DAYS[utc.weekday()] not in self.days:
            return False
        clock = utc.time()
        return any(start <= clock < end for start, end in self.hours_utc)


class ModelPrice(Rates):
    aliases: list[str] = Field(default_factory=list)
    source: str = ""
    example: bool = False
    """Placeholder prices, not published ones."""
    max_prompt_tokens: int | None = None
    """Rates only hold up to this prompt size; larger prompts cost unknown."""
    peak: PeakRates | None = None

    def rates_at(self, at: datetime) -> Rates:
        if self.peak is not None and self.peak.applies(at):
            return self.peak
        return self


class PriceTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    as_of: date
    currency: str = "USD"
    per: Literal["1M tokens"] = "1M tokens"
    notes: str = ""
    models: dict[str, ModelPrice]

    @model_validator(mode="after")
    def _unique_names(self) -> PriceTable:
        seen: set[str] = set(self.models)
        for name, price in self.models.items():
            for alias in price.aliases:
                if alias in seen:
                    raise ValueError(f"alias {alias!r} of {name!r} is already a model or alias")
                seen.add(alias)
        return self

    @functools.cached_property
    def _index(self) -> dict[str, ModelPrice]:
        index = dict(self.models)
        for price in self.models.values():
            index.update(dict.fromkeys(price.aliases, price))
        return index

    def lookup(self, model: str) -> ModelPrice | None:
        """By name or alias; a dated snapshot (`…-20261101`) falls back to its base name."""
        found = self._index.get(model)
        if found is None:
            base = _SNAPSHOT_SUFFIX.sub("", model)
            found = self._index.get(base) if base != model else None
        return found

    def cost(self, usage: Usage, model: str, requested_at: datetime) -> Decimal | None:
        price = self.lookup(model)
        if price is None:
            return None
        if price.max_prompt_tokens is not None and usage.prompt > price.max_prompt_tokens:
            return None
        return price.rates_at(requested_at).cost(usage)


def parse_prices(data: dict[str, Any]) -> PriceTable:
    try:
        return PriceTable.model_validate(data)
    except ValueError as exc:
        raise PriceError(f"invalid price table: {exc}") from exc


def _read(text: str, origin: str) -> dict[str, Any]:
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise PriceError(f"{origin}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PriceError(f"{origin}: expected a JSON object")
    return data


@functools.cache
def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped table, with `override`'s models replacing or extending it.

    The override may be partial (just `models`, optionally `as_of`); its currency,
    if given, must match. Loaded once per path.
    """
    shipped = _read(
        resources.files("app.llm").joinpath("prices.json").read_text("utf-8"), "prices.json"
    )
    if override is None:
        return parse_prices(shipped)
    extra = _read(Path(override).read_text("utf-8"), str(override))
    currency = extra.get("currency", shipped.get("currency"))
    if currency != shipped.get("currency"):
        raise PriceError(
            f"{override}: currency {currency!r} differs from the shipped {shipped['currency']!r}"
        )
    models = {**shipped["models"], **(extra.get("models") or {})}
    merged = {**shipped, **{k: v for k, v in extra.items() if k != "models"}, "models": models}
    return parse_prices(merged)


def cost(
    usage: Usage, model: str, requested_at: datetime, *, table: PriceTable | None = None
) -> Decimal | None:
    """Cost in the table's currency, or None when the price is unknown."""
    return (table or load_prices()).cost(usage, model, requested_at)
