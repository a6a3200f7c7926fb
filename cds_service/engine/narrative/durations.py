"""Time spans written in text: "LBP x 8 wks", "for the past 2 months", "3-week history",
"began 10 days ago", "onset over 48 hrs", "since October", "since 10/1", "yesterday", "over the
past month".

A span dates the onset of what the same sentence mentions: the note's date minus the span.
Ages ("54-year-old", "54 yo") are not spans.  Months count 30 days and years 365, the
reading a reviewer would make of "2 months".
"""
from __future__ import annotations

import re
from datetime import date

UNIT_DAYS = {"h": 1 / 24, "hr": 1 / 24, "hrs": 1 / 24, "hour": 1 / 24, "hours": 1 / 24,
             "d": 1, "day": 1, "days": 1, "w": 7, "wk": 7, "wks": 7, "week": 7, "weeks": 7,
             "mo": 30, "mos": 30, "month": 30, "months": 30, "m": 30,
             "y": 365, "yr": 365, "yrs": 365, "year": 365, "years": 365}
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "several": 3, "few": 3, "couple": 2}
MONTHS = {name: n for n, names in enumerate(
    (("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
     ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")), start=1) for name in names}

SPAN = re.compile(
    r"(?:(?<=[x×])|(?<![\w/.-]))(?P<n>\d{1,3}(?:\.\d)?|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|several|few|couple)"
    r"(?:\s+of)?[\s-]*(?P<unit>hours?|hrs?|h|days?|d|wks?|weeks?|w|mos?|months?|m|yrs?|years?|y)\b(?![\s-]*old)(?!/)",
    re.IGNORECASE)
RELATIVE = re.compile(r"\b(?:(?P<day>yesterday|last night)|"
                      r"(?:the\s+)?(?:past|last|prior)\s+(?P<unit>day|week|wk|month|mo|year|yr)|"
                      r"(?P<n>a|one|two|three|four|five|six|several|few|couple)\s+(?P<unit2>days?|weeks?|months?)\s+ago)\b",
                      re.IGNORECASE)
"""Spans said without a number: "yesterday" (1 day), "over the past month" (30), "a few weeks ago".
("Today" is left out: "seen today for LBP x 3 wks" dates the visit, not the onset.)"""
SINCE = re.compile(r"\bsince\s+(?:(?P<month>[a-z]{3,9})\.?(?:\s+(?P<year>\d{4}))?|(?P<m>\d{1,2})/(?P<d>\d{1,2})(?:/(?P<y>\d{2,4}))?)\b",
                   re.IGNORECASE)


def span_days(sentence: str, near: int, written: date | None) -> int | None:
    """Days from onset to the note's date, from the span nearest character ``near`` of
    ``sentence``; None when the sentence states none."""
    found = [(abs(m.start() - near), _span(m)) for m in SPAN.finditer(sentence)]
    found += [(abs(m.start() - near), _relative(m)) for m in RELATIVE.finditer(sentence)]
    if written is not None:
        found += [(abs(m.start() - near), _since(m, written)) for m in SINCE.finditer(sentence)]
    found = [(distance, days) for distance, days in found if days is not None and days >= 0]
    return min(found)[1] if found else None


def _span(match: re.Match) -> int | None:
    number, unit = match.group("n").lower(), match.group("unit").lower()
    if unit in ("d", "w", "m", "y") and not number[0].isdigit():
        return None   # "a m" is no span
    value = NUMBER_WORDS.get(number)
    if value is None:
        value = float(number)
    return round(value * UNIT_DAYS[unit])


def _relative(match: re.Match) -> int:
    if match.group("day"):
        return 1
    if match.group("unit"):
        return round(UNIT_DAYS[match.group("unit").lower()])
    return round(NUMBER_WORDS[match.group("n").lower()] * UNIT_DAYS[match.group("unit2").lower()])


def _since(match: re.Match, written: date) -> int | None:
    """Days from "since <month>" or "since <m>/<d>[/<y>]" to ``written`` (the latest such date
    not after it)."""
    if match.group("month"):
        month = MONTHS.get(match.group("month").lower())
        if month is None:
            return None
        year = int(match.group("year")) if match.group("year") else written.year - (month > written.month)
        day = 1
    else:
        month, day = int(match.group("m")), int(match.group("d"))
        year_text = match.group("y")
        year = (int(year_text) + (2000 if len(year_text) == 2 else 0)) if year_text else written.year
    try:
        onset = date(year, month, day)
    except ValueError:
        return None
    if not match.group("y") and not match.group("year") and onset > written:
        onset = onset.replace(year=onset.year - 1)
    return (written - onset).days
