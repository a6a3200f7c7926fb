"""Don't nag twice: an order-sign card repeating what order-select already showed is left out.

order-select fires while the order is written; order-sign fires when it is signed.  When the
order has not changed since a decision was shown at order-select, showing the same card again
at signing only trains clinicians to ignore cards (CRD ``resp-35``).  Each shown decision is
remembered as a fingerprint — a SHA-256 of the FHIR server, the order resource (as the EHR sent
it, without extensions) and the decision — in the service's store (SQLite file or PostgreSQL,
``SPINE_CDS_DATABASE``), so every worker and every instance sharing that database sees it.
Nothing readable about the patient is stored.
"""
from __future__ import annotations

import hashlib
import json
import time

from .decision import Decision
from .model import HookRequest
from .store import Store


def fingerprint(hook: HookRequest, decision: Decision) -> str:
    """Same order content, same server, same decision → same fingerprint."""
    order = {k: v for k, v in decision.order.resource.items() if k not in ("extension", "meta", "text")}
    alternative = decision.alternative_study.cpt if decision.alternative_study else None
    material = json.dumps([hook.fhir_server, hook.patient_id, order, decision.outcome, decision.indication_id,
                           alternative, decision.route.program.id], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


class ShownDecisions:
    """Remembers fingerprints of decisions shown at order-select, for a limited time.

    ``database`` is a :class:`Store` to share (its connection and transactions), or a
    ``SPINE_CDS_DATABASE`` value to open a store of its own (closed by :meth:`close`).
    """

    def __init__(self, database: Store | str, window_s: float, clock=time.time):
        self._owned = not isinstance(database, Store)
        self._store = Store(database) if self._owned else database
        self._window, self._clock = window_s, clock

    def remember(self, prints: list[str]) -> None:
        if not self._window:
            return  # SPINE_CDS_REPEAT_WINDOW_S=0: every call stands alone
        now = self._clock()
        self._store.remember_shown(prints, now, now - self._window)

    def already_shown(self, print_: str) -> bool:
        if not self._window:
            return False
        shown_at = self._store.shown_at(print_)
        return shown_at is not None and shown_at >= self._clock() - self._window

    def close(self) -> None:
        if self._owned:
            self._store.close()


def drop_repeats(hook: HookRequest, response: dict, decisions: list[Decision], shown: ShownDecisions) -> dict:
    """At order-select remember what was shown; at order-sign leave out cards already shown.

    Coverage information (``systemActions``) is kept: order-sign's carries what order-select's
    may not (CRD forbids documentation requests on order-select).
    """
    prints = {d.order.reference: fingerprint(hook, d) for d in decisions}
    shown_cards = [prints[order_of(card)] for card in response["cards"]]
    if hook.hook == "order-select":
        shown.remember(shown_cards)
        return response
    kept = [card for card in response["cards"] if not shown.already_shown(prints[order_of(card)])]
    return {**response, "cards": kept}


def order_of(card: dict) -> str:
    """The order a decision card is about (from its ``spine-cds.decision`` extension)."""
    return card["extension"]["spine-cds.decision"]["order"]
