"""What each console page shows, gathered from the stores: no HTTP, no HTML here.

The route handlers (``service.console.routes``) check who is asking and render; these
functions read the decision, the review and the history and shape them for the templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.contract import ScoreResponse

_response_decoder = msgspec.json.Decoder(ScoreResponse)


@dataclass(frozen=True)
class DecisionPage:
    """One decision as the decision page shows it.

    ``response`` is the answer as it was sent to the gateway; ``labels`` the labels
    received for it (newest last) and ``review`` its review's state, when known.
    """

    merchant_id: str
    transaction_id: str
    response: ScoreResponse
    source: str  # where it was read: "redis" while hot, "archive" afterwards
    labels: list[dict[str, Any]] = field(default_factory=list)
    review: dict[str, Any] | None = None


async def decision_page(state: Any, merchant_id: str, transaction_id: str) -> DecisionPage | None:
    """The decision of ``(merchant_id, transaction_id)``, or None when there is none."""
    stored = await state.engine.store.stored_decision(merchant_id, transaction_id)
    if stored is None:
        return None
    response = _response_decoder.decode(stored)
    return DecisionPage(merchant_id, transaction_id, response, source="redis")
