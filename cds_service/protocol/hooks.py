"""Answer one hook call from a validated request and the patient's record.  Pure.

``respond`` never touches Flask, the network or the clock: the routes gather the record and
pass ``today``.  It returns the CDS Hooks response and the decisions (for storage and metrics).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import date

from cds_service.cards.card import card_for
from cds_service.cards.coverage_info import coverage_action
from cds_service.engine.decision import APPROVE, Decision, approves, decide, guideline_for
from cds_service.protocol.discovery import configuration
from cds_service.engine.facts import extract_facts
from cds_service.engine.narrative.reader import MentionCache, Narrative
from cds_service.engine.narrative.texts import Limits
from cds_service.model import Facts, HookRequest, PatientRecord, SpineOrder
from cds_service.cards.pama import pama_action
from cds_service.record.prefetch import NOT_A_DATA_GAP
from cds_service.engine.registry import Registry
from cds_service.engine.routing import Route
from cds_service.engine.studies import spine_orders


def orders_in_scope(hook: HookRequest, registry: Registry) -> tuple[list[SpineOrder], list[SpineOrder]]:
    """(the spine orders to decide, every spine order in the request)."""
    every = spine_orders(hook.draft_orders, registry.catalog)
    selected = set(hook.selections)
    return [o for o in every if o.reference in selected], every


def decide_orders(hook: HookRequest, record: PatientRecord, registry: Registry,
                  default_program: str, today: date, compare_programs: bool = False,
                  notes: Limits | None = Limits(), mention_cache: MentionCache | None = None) -> list[Decision]:
    """One decision per in-scope spine order (and, if asked, which other programs would approve it).

    The narrative is read once per call, within ``notes`` (None: not read at all), with mentions
    kept in ``mention_cache`` between calls."""
    in_scope, every = orders_in_scope(hook, registry)
    if not in_scope:
        return []
    route = registry.routing.route(record, default_program)
    gaps = tuple(sorted(k for k, v in record.sources.items() if v == "failed" and k not in NOT_A_DATA_GAP))
    narrative = (registry.narrative.read(record, hook.draft_orders, today, notes, mention_cache)
                 if registry.narrative is not None and notes is not None else Narrative())
    decisions = []
    for order in in_scope:
        others = tuple(o for o in every if o.reference != order.reference)
        facts = extract_facts(record, order, others, registry.tagger, today, narrative.items)
        decision = decide(facts, route, guideline_for(order, route, registry.guidelines), registry.catalog, gaps)
        decision = replace(decision, unread=narrative.unread)
        if compare_programs:
            decision = replace(decision, also_approved_by=_approving_programs(facts, route, registry))
        decisions.append(decision)
    return decisions


def _approving_programs(facts: Facts, route: Route, registry: Registry) -> tuple[str, ...]:
    """Names of the other programs whose guideline approves the same order on the same record."""
    names = []
    for program in registry.routing.programs.values():
        if program.id == route.program.id:
            continue
        guideline = guideline_for(facts.order, Route(program, "comparison"), registry.guidelines)
        if approves(facts, guideline, registry.catalog):
            names.append(program.short_name)
    return tuple(names)


def respond(hook: HookRequest, record: PatientRecord, registry: Registry, default_program: str,
            today: date, compare_programs: bool = False, base_url: str = "",
            delete_create: bool = False, notes: Limits | None = Limits(),
            mention_cache: MentionCache | None = None) -> tuple[dict, list[Decision]]:
    """The CDS Hooks response body and the decisions behind it (one card per decision).

    ``base_url`` (where this service is reachable) makes the documentation card's form link
    absolute; without it the link is left out.
    """
    decisions = decide_orders(hook, record, registry, default_program, today, compare_programs, notes, mention_cache)
    config = configuration(hook.extension, {"alternative-delete-create": delete_create})
    delete_create = config["alternative-delete-create"]
    cards = [_with_comparison(card_for(d, hook.hook_instance, base_url, delete_create), d) for d in decisions]
    cards = [c for c in cards if config.get(c["source"]["topic"]["code"], True)]
    response: dict = {"cards": cards[: config["max-cards"]]}
    actions = [a for d in decisions if (a := coverage_action(d, hook.hook, hook.hook_instance, today))]
    if actions and config["coverage-info"]:
        response["systemActions"] = actions
    ratings = [a for d in decisions if (a := pama_action(d, hook.hook_instance))]
    if ratings:
        response["extension"] = {"systemActions": ratings}
    return response, decisions


def _with_comparison(card: dict, decision: Decision) -> dict:
    """Add the optional line naming other programs whose criteria the order meets."""
    if decision.also_approved_by:
        lead = "Also meets" if decision.outcome == APPROVE else "For comparison, the same record meets"
        card["detail"] += f"\n\n{lead} the criteria of: {', '.join(decision.also_approved_by)}."
    return card
