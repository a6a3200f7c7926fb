"""A course of conservative care, measured the way the record shows it.

"Failed six weeks of conservative care" is a course, not two dates: one physical-therapy
evaluation fifty days ago and naproxen started yesterday are not six weeks of treatment.  So each
dated care item stands for the care around it and the course is the longest run of care without a
long break:

* a visit, injection or manipulation on one day covers ``VISIT_DAYS`` (a week of the programme:
  home exercise follows a therapy visit);
* a stated period (``performedPeriod``, a prescription's validity or supply, a medication
  statement's ``effectivePeriod``) covers that period; a prescription with no stated supply is one
  dated item like a visit (EHR medication lists keep stale "active" orders, so an order alone is
  not months of treatment), while an active MedicationStatement with no end — the patient says
  they are taking it — runs until today;
* runs separated by at most ``MAX_GAP_DAYS`` join into one course;
* the course is clipped to the programme's lookback and to today.

A single visit therefore never reaches six weeks, and weekly therapy for six weeks does.  Pure.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import NamedTuple

from cds_service.engine.fhir_dates import add_days, human_date
from cds_service.engine.regions import concerns
from cds_service.model import ClinicalItem, Facts, Result, Status

VISIT_DAYS = 7
MAX_GAP_DAYS = 14
ONGOING_TYPES = frozenset({"MedicationStatement"})


class Course(NamedTuple):
    start: date
    end: date                         # last day covered (today at most)
    items: tuple[ClinicalItem, ...]

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def ongoing(self, today: date) -> bool:
        return self.end >= today


def span(item: ClinicalItem, today: date) -> tuple[date, date] | None:
    """The days one dated care item covers (None when undated or in the future)."""
    if item.when is None or item.when > today:
        return None
    if item.end is not None and item.end >= item.when:
        end = item.end
    elif item.resource_type in ONGOING_TYPES and item.status == "active":
        end = today
    else:
        end = add_days(item.when, VISIT_DAYS)
    return item.when, min(end, today)


def longest_course(items: Iterable[ClinicalItem], since: date, today: date) -> Course | None:
    """The longest run of care (gaps of at most MAX_GAP_DAYS joined) within [since, today]."""
    spans = []
    for item in items:
        covered = span(item, today)
        if covered and covered[1] >= since:
            spans.append((max(covered[0], since), covered[1], item))
    spans.sort(key=lambda s: (s[0], s[1], s[2].ref))   # by date, then ref: the same course whatever the input order
    runs: list[Course] = []
    for start, end, item in spans:
        if runs and start <= add_days(runs[-1].end, MAX_GAP_DAYS):
            last = runs[-1]
            runs[-1] = Course(last.start, max(last.end, end), last.items + (item,))
        else:
            runs.append(Course(start, end, (item,)))
    return max(runs, key=lambda run: (run.days, run.end), default=None)


def describe(course: Course, labels: dict[str, str]) -> str:
    """"physical therapy, 9 visits 25 Jul – 3 Dec; NSAIDs since 1 Oct" — per component label."""
    parts = []
    for label, items in _by_label(course.items, labels).items():
        first, last = min(i.when for i in items), max(i.when for i in items)
        visits = len({(i.ref, i.when) for i in items})
        if visits > 1:
            parts.append(f"{label}, {visits} entries {human_date(first)} – {human_date(last)}")
        else:
            parts.append(f"{label} from {human_date(first)}")
    return "; ".join(parts)


def _by_label(items: tuple[ClinicalItem, ...], labels: dict[str, str]) -> dict[str, list[ClinicalItem]]:
    grouped: dict[str, list[ClinicalItem]] = {}
    for item in items:
        grouped.setdefault(labels.get(item.ref, item.display), []).append(item)
    return grouped


def evaluate(node: dict, facts: Facts, region: str | None) -> Result:
    """The ``conservative_care`` criterion: the required components within one course."""
    components, label = node["components"], node["label"]
    found, course = _measure(facts, components, node["lookback_days"], region)
    present = [c for c in components if found[c["id"]]]
    absent = [c for c in components if not found[c["id"]]]
    if not present or (node["require"] == "all" and absent):
        return _missing(node, facts, found, absent)
    labels = {i.ref: c["label"] for c in reversed(present) for i in found[c["id"]]}
    evidence = tuple(dict.fromkeys(i.ref for i in course.items))
    if node["require"] == "all":
        in_course = {i.ref for i in course.items}
        if outside := [c for c in present if not in_course.intersection(i.ref for i in found[c["id"]])]:
            lacking = ", ".join(c["label"] for c in outside)
            return Result(Status.UNKNOWN, label, evidence, detail=f"{describe(course, labels)}; not during that course: {lacking}")
    weeks, detail = node["min_weeks"], describe(course, labels)
    if course.days >= weeks * 7:
        return Result(Status.MET, label, evidence, detail=f"{detail} ({course.days // 7} weeks)")
    if course.ongoing(facts.today):
        met_on = add_days(course.start, 7 * weeks)
        return Result(Status.UNKNOWN, label, evidence, met_on=met_on,
                      detail=f"{detail}; {weeks} weeks of care reached on {human_date(met_on)} if it continues")
    return Result(Status.UNKNOWN, label, evidence,
                  detail=f"{detail}: {course.days // 7} weeks of care on record, {weeks} weeks required")


def _measure(facts: Facts, components: list[dict], lookback_days: int, region: str | None):
    """(items per component, the longest course over the present ones), once per Facts for
    each distinct set of components: the programs compared on one order share definitions."""
    key = ("course", tuple((c["id"], tuple(c["valuesets"])) for c in components), lookback_days, region)
    if (cached := facts.memo.get(key)) is not None:
        return cached
    since, today = add_days(facts.today, -lookback_days), facts.today
    found: dict[str, list[ClinicalItem]] = {}
    for component in components:
        seen: dict[int, ClinicalItem] = {}
        for valueset in component["valuesets"]:
            for item in facts.by_valueset.get(valueset, ()):
                if (item.when and item.when <= today and since <= (item.end or item.when)
                        and item.resource_type != "ServiceRequest" and (region is None or concerns(item.regions, region))):
                    seen[id(item)] = item
        found[component["id"]] = list(seen.values())
    present = [i for c in components for i in found[c["id"]]]
    course_key = ("course-of", frozenset(map(id, present)), lookback_days)   # programs differ in labels, not items
    if (course := facts.memo.get(course_key)) is None and present:
        course = facts.memo[course_key] = longest_course(present, since, today)
    result = (found, course)
    facts.memo[key] = result
    return result


def _missing(node: dict, facts: Facts, found: dict, absent: list[dict]) -> Result:
    evidence = tuple(dict.fromkeys(i.ref for items in found.values() for i in items))
    undated = tuple(dict.fromkeys(i.ref for c in node["components"] for i in facts.with_valuesets(c["valuesets"])
                                  if i.when is None and i.resource_type != "ServiceRequest"))
    lacking = ", ".join(c["label"] for c in (absent or node["components"]))
    detail = f"not documented in the last {node['lookback_days']} days: {lacking}"
    if undated:
        detail += "; care on record without dates — add when it started"
    return Result(Status.UNKNOWN, node["label"], evidence + undated, detail=detail)
