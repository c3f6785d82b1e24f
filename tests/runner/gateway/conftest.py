"""Fixtures for the model gateway: the scripted model server as its upstream (requiring
the real key, so a request only succeeds if the gateway swapped it in) and a price table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from app.llm.prices import PriceTable, parse_prices
from app.llm.types import Protocol
from runner.gateway import Budget, Gateway, Upstream
from testbed.models.harness import RunningModelServer, running_model_server

REAL_KEY = "sk-real-upstream-4f1c9e2b7a"
DUMMY_KEY = "sk-dummy-client-key"
PRICES: PriceTable = parse_prices(
    {
        "as_of": "2026-11-15",
        "models": {
            "priced-model": {
                "input": Decimal(1),
                "cache_read": Decimal("0.1"),
                "cache_write": Decimal("1.25"),
                "output": Decimal(5),
            }
        },
    }
)


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[RunningModelServer]:
    with running_model_server({"rules": [], "api_key": REAL_KEY}) as server:
        yield server


Serve = Callable[[Any], RunningModelServer]


@pytest.fixture
def serve(upstream_server: RunningModelServer) -> Serve:
    def load(rules: Any) -> RunningModelServer:
        script = rules if isinstance(rules, dict) else {"rules": rules}
        upstream_server.set_script({"api_key": REAL_KEY, **script})
        upstream_server.reset()
        return upstream_server

    return load


StartGateway = Callable[..., Any]


@pytest.fixture
async def start_gateway(upstream_server: RunningModelServer) -> AsyncIterator[StartGateway]:
    """`gw, url = await start_gateway(protocol, budget=…, **upstream_fields)`."""
    started: list[Gateway] = []

    async def start(
        protocol: Protocol, budget: Budget | None = None, **fields: Any
    ) -> tuple[Gateway, str]:
        on_stop = fields.pop("on_stop", None)
        fields.setdefault("api_key", None if "oauth_token" in fields else REAL_KEY)
        fields.setdefault("base_url", upstream_server.url)
        gateway = Gateway(Upstream(protocol=protocol, **fields), PRICES, budget, on_stop=on_stop)
        started.append(gateway)
        return gateway, await gateway.start_tcp()

    yield start
    for gateway in started:
        await gateway.aclose()
