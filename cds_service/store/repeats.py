"""Don't nag twice: an order-sign card repeating what order-select already showed is left out.

order-select fires while the order is written; order-sign fires when it is signed.  When the
order has not changed since a decision was shown at order-select, showing the same card again
at signing only trains clinicians to ignore cards (CRD ``resp-35``).  Each shown decision is
remembered as a fingerprint — a SHA-256 of the client (JWT issuer), the user (the token's
``fhirUser`` and ``context.userId``), the FHIR server, the patient, the order resource (as the
EHR sent it, without extensions) and the decision — in the service's store (SQLite file or
PostgreSQL, ``SPINE_CDS_DATABASE``), so every worker and every instance sharing that database
sees it.  Because the client and user are in it, one user's order-select never hides the card
another user (or another EHR) signs (issue #14, finding 11).  Nothing readable about the patient
is stored.
"""
from __future__ import annotations

import hashlib
import json
import time

from cds_service.engine.decision import Decision
from cds_service.model import Caller, HookRequest
from cds_service.store.database import ShownRows, Store


def fingerprint(hook: HookRequest, decision: Decision, caller: Caller) -> str:
    """Same client and user, same order content, same server, same decision → same fingerprint."""
    order = {k: v for k, v in decision.order.resource.items() if k not in ("extension", "meta", "text")}
    alternative = decision.alternative_study.cpt if decision.alternative_study else None
    material = json.dumps([caller.issuer, caller.user, hook.user_id, hook.fhir_server, hook.patient_id, order,
                           decision.outcome, decision.indication_id, alternative, decision.route.program.id],
                          sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


class ShownDecisions:
    """Remembers fingerprints of decisions shown at order-select, for a limited time.

    ``database`` is a :class:`Store` to share (its connection and transactions), or a
    ``SPINE_CDS_DATABASE`` value to open a store of its own (closed by :meth:`close`).
    """

    CLEANUP_EVERY_S = 60.0
    """Expired fingerprints are deleted at most this often per process, not on every call."""

    def __init__(self, database: Store | str, window_s: float, clock=time.time):
        self._owned = not isinstance(database, Store)
        self._store = Store(database) if self._owned else database
        self._window, self._clock = window_s, clock
        self._last_cleanup = float("-inf")

    def rows(self, prints: list[str]) -> ShownRows | None:
        """What to store for cards shown now (in the call's own transaction), or None when off."""
        if not self._window:
            return None  # SPINE_CDS_REPEAT_WINDOW_S=0: every call stands alone
        now = self._clock()
        forget_before = None
        if now - self._last_cleanup >= self.CLEANUP_EVERY_S:
            self._last_cleanup, forget_before = now, now - self._window
        return list(prints), now, forget_before

    def already_shown(self, print_: str) -> bool:
        if not self._window:
            return False
        shown_at = self._store.shown_at(print_)
        return shown_at is not None and shown_at >= self._clock() - self._window

    def close(self) -> None:
        if self._owned:
            self._store.close()


def drop_repeats(hook: HookRequest, response: dict, decisions: list[Decision],
                 shown: ShownDecisions, caller: Caller) -> tuple[dict, ShownRows | None]:
    """At order-sign leave out cards already shown; at order-select say what to remember.

    Returns the response and the fingerprint rows to store with the call (order-select only;
    the caller stores them in the call's transaction, see ``Store.record_hook_call``).
    Coverage information (``systemActions``) is kept: order-sign's carries what order-select's
    may not (CRD forbids documentation requests on order-select).
    """
    prints = {d.order.reference: fingerprint(hook, d, caller) for d in decisions}
    if hook.hook == "order-select":
        return response, shown.rows([prints[order_of(card)] for card in response["cards"]])
    kept = [card for card in response["cards"] if not shown.already_shown(prints[order_of(card)])]
    return {**response, "cards": kept}, None


def order_of(card: dict) -> str:
    """The order a decision card is about (from its ``spine-cds.decision`` extension)."""
    return card["extension"]["spine-cds.decision"]["order"]
