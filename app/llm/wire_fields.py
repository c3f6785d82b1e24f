"""Pieces every wire protocol shares: lenient reads of a provider's JSON, auth headers, and
replaying a reply's own items.

Providers omit or null fields freely, so a reply is read with defaults rather than trusted.
"""

from __future__ import annotations

import copy
from typing import Any

from app.llm.types import AssistantTurn


def as_int(value: object) -> int:
    """A token count, or 0 for anything that is not a real int (bools included)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_dict(value: object) -> dict[str, Any]:
    """The object, or an empty one where the field is missing or of another type."""
    return value if isinstance(value, dict) else {}


def bearer_headers(key: str) -> dict[str, str]:
    """OpenAI-style `Authorization: Bearer` auth."""
    return {"Authorization": f"Bearer {key}"}


def replayed_items(turn: AssistantTurn, protocol: str) -> list[dict[str, Any]] | None:
    """A copy of the raw items of a reply this protocol produced (signed reasoning included),
    which must be sent back unmodified; None when the turn has none to replay."""
    state = turn.provider
    if state is not None and state.protocol == protocol and state.items:
        return copy.deepcopy(state.items)
    return None
