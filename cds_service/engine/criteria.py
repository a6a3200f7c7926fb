"""The closed vocabulary of criterion kinds: one small function per kind.

Each kind reads :class:`Facts` and one leaf of a mapping and returns a three-valued
:class:`Result` with the evidence that decided it.  Absent data is ``unknown`` (that is what the
documentation card asks for) unless the leaf says ``if_absent: not-met``.  The kinds and their
parameters are documented in ``mappings/README.md``; ``guidelines.KINDS`` lists their params.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from datetime import date

from cds_service.engine import courses, trends, units
from cds_service.engine.attestation import ATTESTATION_WINDOW_DAYS, ATTESTED, DENIED, link_id
from cds_service.engine.fhir_dates import add_days, human_date, lower_first
from cds_service.engine.narrative.lexicon import NOTED
from cds_service.engine.regions import WHOLE_SPINE
from cds_service.model import NARRATIVE, ClinicalItem, Facts, Result, Status

COMPARISONS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
ITEM_TYPES = {
    "finding": ("Condition", "ServiceRequest", "Observation", "DiagnosticReport", "Device", NARRATIVE),
    "observation": ("Observation",),
    "procedure": ("Procedure",),
    "medication": ("MedicationRequest", "MedicationStatement"),
    "imaging": ("ImagingStudy", "DiagnosticReport", "Procedure", "ServiceRequest"),
    "requester": ("PractitionerRole",),
}


def in_window(item: ClinicalItem, facts: Facts, within_days: int | None) -> bool | None:
    """True/False for dated items; None when a window applies but the item has no date."""
    if item.when is not None and item.when > facts.today:
        return False  # scheduled or mis-dated: not yet a fact
    if within_days is None:
        return True
    if item.when is None:
        return None
    return item.when >= add_days(facts.today, -within_days)


def _absent(node: dict, detail: str) -> Result:
    status = Status.NOT_MET if node.get("if_absent") == "not-met" else Status.UNKNOWN
    return Result(status, node["label"], detail=detail)


def _decide(node: dict, facts: Facts, items: list[ClinicalItem], passes: Callable[[ClinicalItem], bool | None] = lambda i: True) -> Result:
    """Shared verdict for the item-matching kinds."""
    if not items:  # the common case on a long chart: nothing of this kind at all
        return _absent(node, "not found in the record")
    label, window = node["label"], node.get("within_days")
    timely = [i for i in items if in_window(i, facts, window) is True]
    hits = [i for i in timely if passes(i)]
    if hits:
        return Result(Status.MET, label, _refs(hits), detail=_describe(hits))
    if any(passes(i) is False for i in timely):
        return Result(Status.NOT_MET, label, _refs(timely), detail="on record, but does not meet the criterion")
    if timely:
        return Result(Status.UNKNOWN, label, _refs(timely), detail="on record, but its value or unit cannot be read")
    undated = [i for i in items if in_window(i, facts, window) is None]
    if undated:
        return Result(Status.UNKNOWN, label, _refs(undated), detail="on record without a date; add when it happened")
    if items:
        return Result(Status.NOT_MET, label, _refs(items),
                      detail=f"only older than {window} days" if window else "only dated in the future")
    return _absent(node, "not found in the record")


def _refs(items: Iterable[ClinicalItem]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i.ref for i in items))


def _describe(items: list[ClinicalItem]) -> str:
    parts = []
    for item in items[:3]:
        text = item.display if item.display != item.ref else "on record"
        parts.append(f"{text}, {human_date(item.when)}" if item.when and not item.quote else text)
    return "; ".join(dict.fromkeys(parts))


def _coded(node: dict, facts: Facts, kind: str) -> list[ClinicalItem]:
    """Items of the leaf's value set and kind that concern the ordered region (or name none).
    ``regions: "any"`` keeps every region: a guideline that says so."""
    types, region = ITEM_TYPES[kind], _region_of(node, facts)
    if region is None or region == WHOLE_SPINE:
        return [i for i in facts.by_valueset.get(node.get("valueset"), ()) if i.resource_type in types]
    return [i for i in facts.by_valueset.get(node.get("valueset"), ())   # regions.concerns, inlined: a hot loop
            if i.resource_type in types and (not i.regions or region in i.regions)]


def _region_of(node: dict, facts: Facts) -> str | None:
    """The region evidence must concern: the ordered one by default, none for ``"any"``."""
    wanted = node.get("regions", "ordered")
    if wanted == "any":
        return None
    if wanted == "ordered":
        return facts.order.study.region
    return facts.order.study.region if facts.order.study.region in wanted else wanted[0]


def finding(node: dict, facts: Facts) -> Result:
    """A problem, symptom, exam or report finding, or a device — current, confirmed (unless the
    leaf accepts suspected), about the ordered region, and as old or as new as the leaf asks.

    Mentions read in notes can make it met, never not-met or unknown-with-a-reason: when they do
    not make it met, the leaf is decided on the coded record alone."""
    items = _coded(node, facts, "finding")
    result = _finding(node, facts, items)
    if result.status is not Status.MET and any(i.quote for i in items):
        return _finding(node, facts, [i for i in items if not i.quote])
    return result


def _finding(node: dict, facts: Facts, items: list[ClinicalItem]) -> Result:
    if not node.get("include_suspected"):
        items = [i for i in items if not i.suspected]
    if node.get("active_only") or "onset_min_days" in node or "onset_max_days" in node:
        items = [i for i in items if i.status != "inactive"]   # resolved problems are history
    if "onset_min_days" in node or "onset_max_days" in node:
        return _onset(node, facts, items)
    return _decide(node, facts, items)


def _onset(node: dict, facts: Facts, items: list[ClinicalItem]) -> Result:
    """Duration ("pain for more than 4 weeks": ``onset_min_days``) or newness ("new onset":
    ``onset_max_days``) from the problem's onset.  Undated is unknown, never met; a problem that
    is too recent for a duration will meet it on a date the card can name."""
    if not items:
        return _absent(node, "not found in the record")
    label, low, high = node["label"], node.get("onset_min_days"), node.get("onset_max_days")
    dated = [i for i in items if i.when is not None and i.when <= facts.today]
    if not dated:
        return Result(Status.UNKNOWN, label, _refs(items), detail="on record without an onset date; add when it began")
    age = {id(i): (facts.today - i.when).days for i in dated}
    hits = [i for i in dated if (low is None or age[id(i)] >= low) and (high is None or age[id(i)] <= high)]
    if hits:
        return Result(Status.MET, label, _refs(hits), detail=_describe_onset(hits))
    if low is not None and any(age[id(i)] < low for i in dated):
        earliest = min(i.when for i in dated)
        met_on = add_days(earliest, low)
        return Result(Status.UNKNOWN, label, _refs(dated), met_on=met_on,
                      detail=f"began {human_date(earliest)}; {low} days reached on {human_date(met_on)} if it persists")
    return Result(Status.NOT_MET, label, _refs(dated), detail=f"began {human_date(min(i.when for i in dated))}, "
                  f"more than {high} days ago")


def _describe_onset(items: list[ClinicalItem]) -> str:
    item = min(items, key=lambda i: i.when)
    if item.quote:
        return f"{item.display} (began about {human_date(item.when)})" if item.when else item.display
    text = item.display if item.display != item.ref else "on record"
    how = "recorded" if item.dated_by == "recorded" else "since"
    note = " (the date it was recorded: no onset date on record)" if item.dated_by == "recorded" else ""
    return f"{text}, {how} {human_date(item.when)}{note}"


def observation(node: dict, facts: Facts) -> Result:
    if "percent_change" in node:
        return trends.percent_change(node, facts, _coded(node, facts, "observation"))
    test = node.get("value") or {}

    def passes(item: ClinicalItem) -> bool | None:
        if node.get("abnormal"):
            return item.abnormal
        value = _in_unit(item, test.get("unit"))
        if value is None:
            return None  # no number, or a unit we cannot convert: unknown, not a pass or fail
        return all(COMPARISONS[op](value, bound) for op, bound in test.items() if op in COMPARISONS)

    return _decide(node, facts, _coded(node, facts, "observation"), passes)


def _in_unit(item: ClinicalItem, wanted: str | None) -> float | None:
    """The item's value in the threshold's UCUM unit (converted: 101.5 [degF] is 38.6 Cel)."""
    if item.value is None:
        return None
    if wanted is None:
        return item.value
    return units.convert(item.value, item.unit, wanted)


def procedure(node: dict, facts: Facts) -> Result:
    return _decide(node, facts, _coded(node, facts, "procedure"))


def medication(node: dict, facts: Facts) -> Result:
    return _decide(node, facts, _coded(node, facts, "medication"))


def requester(node: dict, facts: Facts) -> Result:
    """Who orders: the specialty of the ordering clinician's role ("ordered by a neurosurgeon")."""
    return _decide(node, facts, _coded(node, facts, "requester"))


def imaging(node: dict, facts: Facts) -> Result:
    if "valueset" in node:
        return _decide(node, facts, _coded(node, facts, "imaging"))
    regions = node.get("regions", "ordered")
    regions = {facts.order.study.region} if regions == "ordered" else set(regions)
    modalities = set(node.get("modalities") or [])
    items = [i for i in facts.items if i.study and i.resource_type in ITEM_TYPES["imaging"]
             and i.study.region in regions and (not modalities or i.study.modality in modalities)]
    return _decide(node, facts, items)


def age(node: dict, facts: Facts) -> Result:
    if facts.birth_date is None:
        return Result(Status.UNKNOWN, node["label"], detail="no birth date in the record")
    years, months = completed_years(facts.birth_date, facts.today), completed_months(facts.birth_date, facts.today)
    ok = all((node.get("min_years", years) <= years <= node.get("max_years", years),
              node.get("min_months", months) <= months <= node.get("max_months", months)))
    detail = f"age {years} years" if years >= 2 else f"age {months} months"
    return Result(Status.MET if ok else Status.NOT_MET, node["label"], ("Patient",), detail=detail)


def completed_years(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def completed_months(born: date, today: date) -> int:
    return (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)


def conservative_care(node: dict, facts: Facts) -> Result:
    """A long-enough course of care of the required components, in the lookback, for the
    ordered region (courses.py measures it)."""
    return courses.evaluate(node, facts, _region_of(node, facts))


def draft_order(node: dict, facts: Facts) -> Result:
    regions = node.get("regions", "ordered")
    regions = {facts.order.study.region} if regions == "ordered" else set(regions)
    others = [o for o in facts.other_orders if o.study.modality in node["modalities"] and o.study.region in regions]
    status = Status.MET if others else Status.NOT_MET
    detail = ", ".join(f"{o.study.display} ({o.reference})" for o in others) or None
    return Result(status, node["label"], detail=detail)  # orders in this request are not record evidence


def ordered_study(node: dict, facts: Facts) -> Result:
    study = facts.order.study
    ok = all(getattr(study, attr) in node[key] for key, attr in
             (("modalities", "modality"), ("regions", "region"), ("contrast", "contrast")) if key in node)
    return Result(Status.MET if ok else Status.NOT_MET, node["label"], detail=study.display)


def documented(node: dict, facts: Facts) -> Result:
    """Only the clinician can say: met by an attestation (a completed QuestionnaireResponse to one
    of our Questionnaires, see questionnaires.py) answering this leaf's question yes.

    The attestation must be recent — ``within_days``, else 183 days — because it is about this
    episode.  A later "no" (the clinician says it is not so) is not-met; yes and no on the same
    day contradict each other and stay unknown.  Nothing attested is unknown, as before.
    """
    key = link_id(node["label"])
    window = node.get("within_days", ATTESTATION_WINDOW_DAYS)
    answers = [i for vs in (ATTESTED + key, DENIED + key) for i in facts.by_valueset.get(vs, ())
               if i.resource_type == "QuestionnaireResponse"]
    noted = [i for i in facts.by_valueset.get(NOTED + key, ()) if in_window(i, facts, window) is True]
    result = _attested(node, facts, answers, window)
    if noted and result.status is not Status.NOT_MET and result.status is not Status.MET:
        latest = max(noted, key=lambda i: i.when)
        return Result(Status.MET, node["label"], _refs([latest]), detail=f"found in the {lower_first(latest.display)}")
    return result


def _attested(node: dict, facts: Facts, answers: list[ClinicalItem], window: int) -> Result:
    """The verdict of the clinician's attestations alone."""
    if not answers:
        return _absent(node, "answer it in the linked form, or in the notes")
    key = link_id(node["label"])
    timely = [i for i in answers if in_window(i, facts, window) is True]
    last_yes = max((i.when for i in timely if ATTESTED + key in i.valuesets), default=None)
    last_no = max((i.when for i in timely if DENIED + key in i.valuesets), default=None)
    latest = max(filter(None, (last_yes, last_no)), default=None)
    deciding, label = _refs(i for i in timely if i.when == latest), node["label"]
    if last_no is not None and (last_yes is None or last_no > last_yes):
        return Result(Status.NOT_MET, label, deciding, detail=f"the clinician attested it is not so ({human_date(last_no)})")
    if last_yes is not None and last_yes == last_no:
        return Result(Status.UNKNOWN, label, deciding,
                      detail=f"conflicting attestations on {human_date(last_yes)}; answer the question once more")
    if last_yes is not None:
        return Result(Status.MET, label, deciding, detail=f"attested by the clinician, {human_date(last_yes)}")
    past = [i.when for i in answers if i.when is not None and i.when <= facts.today]
    detail = (f"last attested {human_date(max(past))}, more than {window} days ago; attest it again for this episode" if past
              else "attestation dated in the future" if any(i.when for i in answers)
              else "attestation without a usable date (QuestionnaireResponse.authored)")
    return Result(Status.UNKNOWN, label, _refs(answers), detail=detail)


def tags_read(node: dict) -> frozenset[str] | None:
    """The value-set tags (``Facts.by_valueset`` keys) a leaf reads, or None when it also reads
    anything else (age, the ordered study, other draft orders, every imaging item).

    A leaf whose tags are all absent from a record returns the same result on every such record
    (the "not found" answer above), which is what lets evaluation compute it once; tested for
    every leaf of every guideline in tests/test_evaluation_engine.py.
    """
    kind = node["kind"]
    if kind in ("finding", "observation", "procedure", "medication", "requester") or (kind == "imaging" and "valueset" in node):
        return frozenset({node["valueset"]})
    if kind == "conservative_care":
        return frozenset(vs for component in node["components"] for vs in component["valuesets"])
    if kind == "documented":
        key = link_id(node["label"])
        return frozenset({ATTESTED + key, DENIED + key, NOTED + key})
    return None


KIND_FUNCTIONS: dict[str, Callable[[dict, Facts], Result]] = {
    "finding": finding, "observation": observation, "procedure": procedure, "medication": medication,
    "imaging": imaging, "age": age, "conservative_care": conservative_care, "draft_order": draft_order,
    "ordered_study": ordered_study, "documented": documented, "requester": requester,
}
