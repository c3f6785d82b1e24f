"""What the web process's request handlers share: settings, Redis, the webhook secret."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from arq.connections import ArqRedis
from starlette.requests import Request

from app.metrics import Metrics
from app.settings import Settings
from app.web.webhooks import BotIdentity


@dataclass
class WebState:
    settings: Settings
    redis: ArqRedis
    secret: bytes
    bot: BotIdentity

    @functools.cached_property
    def metrics(self) -> Metrics:
        return Metrics(self.redis)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.baro
    return state
