"""Answer one hook call from a validated request and the patient's record.  Pure.

``respond`` never touches Flask, the network or the clock: the routes gather the record and
pass ``today``.  It returns the CDS Hooks response and the decisions (for storage and metrics).
"""
from __future__ import annotations

from datetime import date

from .cards import card_for
from .coverage_info import coverage_action
from .decision import Decision, decide, guideline_for
from .discovery import configuration
from .facts import extract_facts
from .model import HookRequest, PatientRecord, SpineOrder
from .registry import Registry
from .studies import spine_orders


def orders_in_scope(hook: HookRequest, registry: Registry) -> tuple[list[SpineOrder], list[SpineOrder]]:
    """(the spine orders to decide, every spine order in the request)."""
    every = spine_orders(hook.draft_orders, registry.catalog)
    selected = set(hook.selections)
    return [o for o in every if o.reference in selected], every


def decide_orders(hook: HookRequest, record: PatientRecord, registry: Registry,
                  default_program: str, today: date) -> list[Decision]:
    """One decision per in-scope spine order."""
    in_scope, every = orders_in_scope(hook, registry)
    route = registry.routing.route(record, default_program)
    gaps = tuple(sorted(k for k, v in record.sources.items() if v == "failed"))
    decisions = []
    for order in in_scope:
        others = tuple(o for o in every if o.reference != order.reference)
        facts = extract_facts(record, order, others, registry.terminology, registry.catalog, today)
        guideline = guideline_for(order, route, registry.guidelines)
        decisions.append(decide(facts, route, guideline, registry.catalog, gaps))
    return decisions


def respond(hook: HookRequest, record: PatientRecord, registry: Registry,
            default_program: str, today: date) -> tuple[dict, list[Decision]]:
    """The CDS Hooks response body and the decisions behind it."""
    decisions = decide_orders(hook, record, registry, default_program, today)
    config = configuration(hook.extension)
    cards = [card_for(d, hook.hook_instance) for d in decisions]
    response: dict = {"cards": cards[: config["max-cards"]]}
    actions = [a for d in decisions if (a := coverage_action(d, hook.hook, hook.hook_instance, today))]
    if actions and config["coverage-info"]:
        response["systemActions"] = actions
    return response, decisions
