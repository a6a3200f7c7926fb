"""Don't nag twice: an order-sign card repeating what order-select already showed is left out.

order-select fires while the order is written; order-sign fires when it is signed.  When the
order has not changed since a decision was shown at order-select, showing the same card again
at signing only trains clinicians to ignore cards (CRD ``resp-35``).  Each shown decision is
remembered as a fingerprint — a SHA-256 of the FHIR server, the order resource (as the EHR sent
it, without extensions) and the decision — in the SQLite database, so every worker and instance
sharing the file sees it.  Nothing readable about the patient is stored.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time

from .decision import Decision
from .model import HookRequest

SCHEMA = "CREATE TABLE IF NOT EXISTS shown_decisions (fingerprint TEXT PRIMARY KEY, shown_at REAL NOT NULL)"


def fingerprint(hook: HookRequest, decision: Decision) -> str:
    """Same order content, same server, same decision → same fingerprint."""
    order = {k: v for k, v in decision.order.resource.items() if k not in ("extension", "meta", "text")}
    alternative = decision.alternative_study.cpt if decision.alternative_study else None
    material = json.dumps([hook.fhir_server, hook.patient_id, order, decision.outcome, decision.indication_id,
                           alternative, decision.route.program.id], sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


class ShownDecisions:
    """Remembers fingerprints of decisions shown at order-select, for a limited time."""

    def __init__(self, path: str, window_s: float, clock=time.time):
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._lock, self._window, self._clock = threading.Lock(), window_s, clock
        with self._lock, self._db:
            self._db.execute(SCHEMA)

    def remember(self, prints: list[str]) -> None:
        if not self._window:
            return  # SPINE_CDS_REPEAT_WINDOW_S=0: every call stands alone
        now = self._clock()
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO shown_decisions VALUES (?, ?)", [(p, now) for p in prints])
            self._db.execute("DELETE FROM shown_decisions WHERE shown_at < ?", (now - self._window,))

    def already_shown(self, print_: str) -> bool:
        if not self._window:
            return False
        with self._lock:
            row = self._db.execute("SELECT shown_at FROM shown_decisions WHERE fingerprint = ?", (print_,)).fetchone()
        return row is not None and row[0] >= self._clock() - self._window

    def close(self) -> None:
        self._db.close()


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
