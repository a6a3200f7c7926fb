"""When a problem began and ended, and how long a prescription runs — the dates clinicians mean.

Pure helpers for fact extraction.  A Condition's onset is ``onsetDateTime``, ``onsetPeriod.start``
or ``onsetAge`` (with the birth date); ``recordedDate`` is a last resort, and the item says so
(``dated_by="recorded"``) so a card can tell the clinician the onset itself is not on record.  A
problem is history once its ``clinicalStatus`` says so or an ``abatement[x]`` is on or before
today.  A medication course runs from ``authoredOn`` / ``effective[x]`` to the end its
prescription states (``dispenseRequest.validityPeriod.end``, ``expectedSupplyDuration``, or a
statement's ``effectivePeriod.end``); an active prescription with no stated end is ongoing.
"""
from __future__ import annotations

from datetime import date, timedelta

from cds_service.engine.fhir_dates import first_date, parse_date

INACTIVE_CLINICAL = frozenset({"inactive", "remission", "resolved"})
# UCUM (and common text) units of a Duration or an Age, in days.
DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30,
                 "months": 30, "a": 365, "year": 365, "years": 365}


MAX_DURATION_DAYS = 36_525
"""A century: a longer Duration/Age is no clinical one (and a date moved by it would leave the
calendar: a fuzzed supply of 10^9 days broke a call with OverflowError), so it reads as unknown."""


def duration_days(value: object) -> int | None:
    """A FHIR Duration/Age (``{"value": 30, "code": "d"}``) in whole days, or None."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), (int, float)) or value["value"] < 0:
        return None
    unit = value.get("code") if isinstance(value.get("code"), str) else value.get("unit")
    per = DAYS_PER_UNIT.get(unit.strip().lower()) if isinstance(unit, str) else None
    if per is None or not value["value"] * per <= MAX_DURATION_DAYS:   # NaN and infinity fail too
        return None
    return int(value["value"] * per)


def condition_onset(resource: dict, birth: date | None) -> tuple[date | None, str | None]:
    """(onset, how it was dated): "onset", "age at onset", "recorded", or (None, None)."""
    onset = first_date(resource, "onsetDateTime", "onsetPeriod")
    if onset is not None:
        return onset, "onset"
    age_days = duration_days(resource.get("onsetAge"))
    if age_days is not None and birth is not None and (onset := _plus_days(birth, age_days)) is not None:
        return onset, "age at onset"
    recorded = parse_date(resource.get("recordedDate"))
    return (recorded, "recorded") if recorded is not None else (None, None)


def condition_abated(resource: dict, birth: date | None, today: date) -> date | None:
    """When the problem ended, if the record says it has (on or before today)."""
    end = first_date(resource, "abatementDateTime")
    if end is None and isinstance(resource.get("abatementPeriod"), dict):
        end = parse_date(resource["abatementPeriod"].get("end")) or parse_date(resource["abatementPeriod"].get("start"))
    if end is None and birth is not None and (days := duration_days(resource.get("abatementAge"))) is not None:
        end = _plus_days(birth, days)
    return end if end is not None and end <= today else None


def is_history(clinical_status: str | None, abated: date | None) -> bool:
    return clinical_status in INACTIVE_CLINICAL or abated is not None


def medication_end(resource: dict, start: date | None) -> date | None:
    """The last day of a prescription or statement, when the record states one."""
    if resource.get("resourceType") == "MedicationStatement":
        period = resource.get("effectivePeriod")
        return parse_date(period.get("end")) if isinstance(period, dict) else None
    dispense = resource.get("dispenseRequest") if isinstance(resource.get("dispenseRequest"), dict) else {}
    validity = dispense.get("validityPeriod")
    if isinstance(validity, dict) and (end := parse_date(validity.get("end"))) is not None:
        return end
    days = duration_days(dispense.get("expectedSupplyDuration"))
    if days is not None and start is not None:
        refills = dispense.get("numberOfRepeatsAllowed")
        fills = 1 + (refills if isinstance(refills, int) and 0 <= refills <= 12 else 0)
        return _plus_days(start, days * fills)
    return None


def _plus_days(day: date, days: int) -> date | None:
    """``day`` + ``days``, or None when that leaves the calendar (a start date in 9999)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None
