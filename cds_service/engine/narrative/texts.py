"""Where a chart keeps narrative, read as dated pieces of text.

Sources: clinical notes (``DocumentReference`` attachments), report text
(``DiagnosticReport.conclusion`` and ``presentedForm``), annotations (``note`` of Condition,
Observation, Procedure, ServiceRequest), ``Observation.valueString``, a problem written only in
words (``Condition.code.text`` with no coding), and an order's reason written only in words
(``ServiceRequest.reasonCode.text`` without a coding, the draft order's included).  Each piece is dated by its
resource: a note by ``context.period`` then ``date``, a report by ``effective[x]`` then
``issued``, an annotation by its ``time``.  Voided resources are skipped; notes older than the
lookback are not read; what cannot be read (PDF, bad base64, over a cap) is listed, never
guessed at.  Pure: ``today`` and the caps come in.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from cds_service.engine.facts import IGNORED_STATUSES, as_list
from cds_service.engine.fhir_dates import add_days, first_date, human_date, parse_date
from cds_service.engine.narrative.markup import Unreadable, decode
from cds_service.model import PatientRecord

VOID = IGNORED_STATUSES - {"draft"} | {"superseded"}
"""The statuses whose words say nothing: those facts.py ignores, but a draft order's reason is
today's reason, and a superseded note has a newer version that is read instead."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one call reads (settings SPINE_CDS_NOTE_*)."""

    note_chars: int = 200_000
    call_chars: int = 2_000_000
    attachment_bytes: int = 2_000_000
    lookback_days: int = 366


@dataclass(frozen=True)
class NoteText:
    ref: str            # "DocumentReference/abc": what the evidence points at
    source: str         # "Progress note": what the card calls it
    when: date | None
    text: str


@dataclass(frozen=True)
class Collected:
    texts: tuple[NoteText, ...]
    unread: tuple[str, ...]     # one line per piece not read, and why ("Discharge summary, 2 Dec: PDF")


def collect(record: PatientRecord, drafts: tuple[dict, ...], today: date, limits: Limits) -> Collected:
    """Every readable piece of narrative of the record and the draft orders, within the caps."""
    texts: list[NoteText] = []
    unread: list[str] = []
    budget = limits.call_chars
    for piece in _pieces(record, drafts, today, limits, unread):
        if not piece.text.strip():
            continue
        if budget <= 0:
            unread.append(f"{_name(piece)}: over the {limits.call_chars:,}-character limit per call")
            continue
        text = piece.text[: min(limits.note_chars, budget)]
        if len(text) < len(piece.text):
            unread.append(f"{_name(piece)}: only its first {len(text):,} characters were read")
        budget -= len(text)
        texts.append(NoteText(piece.ref, piece.source, piece.when, text))
    return Collected(tuple(texts), tuple(unread))


def _name(piece: NoteText) -> str:
    return f"{piece.source}, {human_date(piece.when)}" if piece.when else piece.source


def _pieces(record, drafts, today, limits, unread) -> Iterator[NoteText]:
    oldest = add_days(today, -limits.lookback_days)
    yield from _documents(record.of_type("DocumentReference"), oldest, limits, unread)
    for report in _live(record.of_type("DiagnosticReport"), ("conclusion", "presentedForm")):
        when = first_date(report, "effectiveDateTime", "effectivePeriod", "issued")
        source = _label(report.get("code"), "Report")
        yield _piece(report, source, when, report.get("conclusion"))
        yield from _attachments(report, report.get("presentedForm"), source, when, limits, unread)
    for condition in _live(record.of_type("Condition"), ("code", "note")):
        code = condition.get("code")
        worded = isinstance(code, dict) and not as_list(code.get("coding")) and isinstance(code.get("text"), str)
        if worded or "note" in condition:
            when = first_date(condition, "recordedDate", "onsetDateTime", "onsetPeriod")
            if worded:
                yield _piece(condition, "Problem list", when, code.get("text"))
            yield from _notes(condition, "Problem note", when)
    for observation in _live(record.of_type("Observation"), ("valueString", "note")):
        when = first_date(observation, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
        source = _label(observation.get("code"), "Observation")
        yield _piece(observation, source, when, observation.get("valueString"))
        yield from _notes(observation, f"{source} note", when)
    for procedure in _live(record.of_type("Procedure"), ("note",)):
        when = first_date(procedure, "performedDateTime", "performedPeriod")
        yield from _notes(procedure, f"{_label(procedure.get('code'), 'Procedure')} note", when)
    orders = (*_live(record.of_type("ServiceRequest"), ("note", "reasonCode")), *(d for d in drafts if isinstance(d, dict)))
    for order in orders:
        when = first_date(order, "authoredOn") or (today if order in drafts else None)
        yield from _notes(order, "Order note", when)
        for reason in as_list(order.get("reasonCode")):
            if isinstance(reason, dict) and not as_list(reason.get("coding")):   # coded reasons are read as codes
                yield _piece(order, "Order reason", when, reason.get("text"))


def _documents(documents, oldest: date, limits: Limits, unread: list[str]) -> Iterator[NoteText]:
    for document in _live(documents):
        if document.get("docStatus") == "entered-in-error":
            continue
        context = document.get("context") if isinstance(document.get("context"), dict) else {}
        when = first_date(context, "period") or parse_date(document.get("date"))
        if when is not None and when < oldest:
            continue
        source = _label(document.get("type"), None) or _label((as_list(document.get("category")) or [None])[0], "Clinical note")
        attachments = [c.get("attachment") for c in as_list(document.get("content")) if isinstance(c, dict)]
        yield from _attachments(document, attachments, source, when, limits, unread)


def _attachments(resource: dict, attachments, source: str, when: date | None, limits: Limits,
                 unread: list[str]) -> Iterator[NoteText]:
    """The first readable attachment (a note sent as text and as PDF is read once); when none
    is readable, each one is listed with why."""
    reasons = []
    for attachment in attachments if isinstance(attachments, list) else ():
        if not isinstance(attachment, dict):
            continue
        if "data" not in attachment:
            reasons.append("its content is at a URL that was not read" if attachment.get("url") else "no content")
            continue
        try:
            text = decode(attachment.get("data"), attachment.get("contentType"), limits.attachment_bytes)
        except Unreadable as why:
            reasons.append(str(why))
            continue
        yield NoteText(_ref(resource), source, when, text)
        return
    if reasons:
        name = f"{source}, {human_date(when)}" if when else source
        unread.append(f"{name}: not read ({'; '.join(dict.fromkeys(reasons))})")


def _notes(resource: dict, source: str, when: date | None) -> Iterator[NoteText]:
    for note in as_list(resource.get("note")):
        if isinstance(note, dict):
            yield _piece(resource, source, parse_date(note.get("time")) or when, note.get("text"))


def _piece(resource: dict, source: str, when: date | None, text: object) -> NoteText:
    return NoteText(_ref(resource), source, when, text if isinstance(text, str) else "")


def _live(resources, fields: tuple[str, ...] | None = None) -> Iterator[dict]:
    """Resources that are not voided and (when ``fields`` are given) have one of them: on a long
    chart most observations carry no words at all, and are passed over at the cost of a lookup."""
    for resource in resources:
        if not isinstance(resource, dict) or (fields and resource.keys().isdisjoint(fields)):
            continue
        status = resource.get("status")
        if isinstance(resource.get("id"), str) and not (isinstance(status, str) and status in VOID):
            yield resource


def _ref(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _label(concept: object, fallback: str | None) -> str | None:
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str) and concept["text"].strip():
            return concept["text"].strip()[:60]
        for coding in as_list(concept.get("coding")):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str) and coding["display"].strip():
                return coding["display"].strip()[:60]
    return fallback
