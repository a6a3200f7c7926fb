"""Clinician-facing wording: summaries under 140 characters and markdown details.

Kept apart from the card structure so wording can be reviewed (and tested) on its own.
"""
from __future__ import annotations

from datetime import date

from cds_service.engine.decision import Decision
from cds_service.engine.fhir_dates import human_date, lower_first
from cds_service.engine.evaluation import Missing, missing_items
from cds_service.model import Result, Status

SUMMARY_LIMIT = 139
NOT_FOUND = "not found in the record"  # the default reason: implied by a checklist line


def compose(*candidates: str, limit: int = SUMMARY_LIMIT) -> str:
    """The first candidate that fits ``limit`` characters: a summary is written to fit, most
    complete first, never cut mid-sentence (the last candidate is a short form that fits)."""
    texts = [" ".join(c.split()) for c in candidates]
    return next((t for t in texts if len(t) <= limit), shorten(texts[-1], limit))


def shorten(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """Cut ``text`` to ``limit`` characters at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—-") + "…"


def day(value: date) -> str:
    return human_date(value)


def short(d: Decision) -> str:
    return d.route.program.short_name


def study_name(decision: Decision) -> str:
    study = decision.order.study
    return f"{study.region.capitalize()} spine {'MRI' if study.modality == 'MR' else study.modality}"


def approve_summary(d: Decision) -> str:
    return compose(f"{study_name(d)} meets {short(d)} criteria: {d.indication.rule.label}",
                   f"{study_name(d)} meets {short(d)} criteria (indication in the details)")


def alternative_summary(d: Decision) -> str:
    reason = d.alternative.rule.reason.rstrip(".")
    first_sentence = reason.split("; ")[0].split(". ")[0]
    return compose(f"Order {d.alternative_study.display} instead — {reason}",
                   f"Order {d.alternative_study.display} instead — {first_sentence}",
                   f"Order {d.alternative_study.display} instead ({short(d)}: why in the details)")


def documentation_summary(d: Decision) -> str:
    prefix = f"{study_name(d)}: "
    if d.blocking_gates:
        return compose(prefix + f"{short(d)} also needs: {lower_first(d.blocking_gates[0].rule.label)}",
                       prefix + f"{short(d)} needs more documentation for this study (see the details)")
    if d.indication and d.indication.result.met_on:   # a future date: not met yet, and it must read so
        when = day(d.indication.result.met_on)
        return compose(prefix + f"will meet {short(d)} criteria on {when} if care continues ({d.indication.rule.label})",
                       prefix + f"will meet {short(d)} criteria on {when} if care continues")
    first = _first_missing(d)
    if first and len(first) > 60 and d.indication:
        first = lower_first(d.indication.rule.label)  # a long checklist line: name the indication instead
    if not first:
        return compose(prefix + f"the record does not show {short(d)} criteria")
    return compose(prefix + f"document {first} to meet {short(d)} criteria",
                   prefix + f"documentation needed to meet {short(d)} criteria (checklist in the details)")


def incomplete_summary(d: Decision) -> str:
    return shorten(f"{study_name(d)}: {short(d)} check could not complete — EHR data unavailable; try again")


def no_policy_summary(d: Decision) -> str:
    return shorten(f"No {d.route.program.name} guideline covers {lower_first(study_name(d))} here; no decision made")


def _first_missing(d: Decision) -> str | None:
    if not d.indication:
        return None
    items = missing_items(d.indication.result)
    return lower_first(items[0].text()) if items else None


def cite(rule) -> str:
    quote = rule.source.get("quote")
    return f"{rule.source['section']}" + (f': "{quote}"' if quote else "")


def evidence_lines(result: Result) -> list[str]:
    """One line per met leaf: its label and what was found, in clinical words ("physical therapy,
    9 entries 25 Jul – 3 Dec").  Resource ids are for machines: they stay in the decision
    extension, never as a list in the text a clinician reads."""
    if result.status != Status.MET and result.combinator != "all":
        return []
    if result.children and result.combinator != "not":
        return [line for child in result.children if child.status == Status.MET for line in evidence_lines(child)]
    found = f": {result.detail}" if result.detail else ""
    return [f"- {result.label}{found}"]


def checklist(items: list[Missing]) -> list[str]:
    """A markdown task list; alternatives ("one of") nest under their line."""
    lines = []
    for item in items:
        lines.append(f"- [ ] {_missing_text(item)}")
        lines.extend(_options(item.one_of, depth=1))
    return lines


def _options(options: tuple[Missing, ...], depth: int) -> list[str]:
    lines = []
    for option in options:
        lines.append(f"{'    ' * depth}- {_missing_text(option)}")
        lines.extend(_options(option.one_of, depth + 1))
    return lines


def _missing_text(item: Missing) -> str:
    text = ("One of:" if item.label == "one of" else f"{item.label} — one of:") if item.one_of else item.label
    if item.met_on:
        text += f" (will be met on {day(item.met_on)} if it continues)"
    if item.detail and not item.one_of and item.detail != NOT_FOUND:
        text += f" — {item.detail}"
    return text


def program_note(d: Decision) -> str:
    note = (f"Payer: **{d.route.payer}**; its imaging benefit manager: {d.route.program.name}" if d.route.payer
            else f"Program: **{d.route.program.name}**")
    if d.route.routed_by == "default":
        note += f" — the default program ({d.route.note})"
    if d.guideline:
        note += f". Guideline: {d.guideline.title}" + (f", {d.guideline.version}" if d.guideline.version else "")
    gaps = f"\n\nCould not read from the EHR: {', '.join(d.data_gaps)} — criteria from these are shown as unknown." if d.data_gaps else ""
    unread = "\n\nNot read by spine-cds (check them yourself):\n" + "\n".join(f"- {line}" for line in d.unread) if d.unread else ""
    return note + "." + gaps + unread
