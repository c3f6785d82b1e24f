"""The model a worker phase (planning, review) runs on: routing, catalog, key, metering."""

from __future__ import annotations

import httpx

from app.core.routing import Phase, RepoConfig
from app.llm.catalog import CatalogError, ModelCatalog, build_client
from app.llm.client import ModelClient
from app.llm.meter import CallRecorder, MeteredClient
from app.llm.prices import PriceTable
from app.settings import Settings


class ModelUnavailable(Exception):
    """No usable model for the phase; `next_step` tells the operator what to set."""

    def __init__(self, reason: str, next_step: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_step = next_step


def phase_client(
    settings: Settings,
    phase: Phase,
    config: RepoConfig,
    http: httpx.AsyncClient,
    recorder: CallRecorder,
    prices: PriceTable,
) -> tuple[str, ModelClient, str]:
    """(model name, metered client, price key) for `phase` under this repository's choices."""
    routing = settings.routing
    if routing is None or not settings.models:
        raise ModelUnavailable(
            f"no {phase} model is configured on this baro server",
            "The operator needs to set `BARO_MODELS` and `BARO_ROUTING`.",
        )
    name = routing.for_repo(config).model_for(phase)
    try:
        model = ModelCatalog(settings.models).get(name)
    except CatalogError as exc:
        raise ModelUnavailable(str(exc)) from exc
    key = settings.model_keys.get(name)
    if key is None:
        raise ModelUnavailable(
            f"model {name!r} has no API key on this baro server",
            f"The operator needs to set `{model.api_key_env}`.",
        )
    client = build_client(model, key.get_secret_value(), http)
    return name, MeteredClient(client, recorder, prices), model.price_key
