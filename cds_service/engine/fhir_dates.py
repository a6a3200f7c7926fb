"""Lenient reading of FHIR date, dateTime and period values from raw JSON.

Records arrive with full timestamps, partial dates ("2026-09", "2026") or nothing at all.  A
partial date is read as its first day; anything unreadable is ``None`` (unknown), never an error.
"""
from __future__ import annotations

from datetime import date, timedelta


def parse_date(value: object) -> date | None:
    """The calendar date of a FHIR date/dateTime string, or None."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    if len(value) >= 10 and value[4] == "-" and value[7] == "-":
        try:
            return date.fromisoformat(value[:10])  # the usual full date, parsed in C
        except ValueError:
            pass
    parts = value[:10].split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        day = int(parts[2][:2]) if len(parts) > 2 and parts[2] else 1
        return date(year, month, day)
    except (ValueError, IndexError):
        return None


def first_date(resource: dict, *fields: str) -> date | None:
    """The first readable date among ``fields``; ``xPeriod`` fields yield their start."""
    for field in fields:
        value = resource.get(field)
        if isinstance(value, dict):
            value = value.get("start") or value.get("end")
        found = parse_date(value)
        if found is not None:
            return found
    return None


def period_end(resource: dict, field: str) -> date | None:
    value = resource.get(field)
    return parse_date(value.get("end")) if isinstance(value, dict) else None


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def human_date(value: date) -> str:
    """A date as clinicians read it: 3 Dec 2026 (English month names whatever the server's locale,
    which ``strftime('%b')`` would follow)."""
    return f"{value.day} {MONTHS[value.month - 1]} {value.year}"


def lower_first(text: str) -> str:
    """Lower-case the first letter unless it starts an acronym ("CT", "MRI")."""
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


def add_days(day: date, days: float) -> date:
    """``day`` plus ``days`` (negative: minus), held within the calendar: a record that says a
    prescription runs for 10 million days, or a birth in year 1, must not crash a decision."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min
