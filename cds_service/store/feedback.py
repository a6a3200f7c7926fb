"""Validation of CDS Hooks 2.0 feedback bodies (``POST /cds-services/{id}/feedback``).

Why a hand-written validator: the body is small, the rules are few (2.0 §Feedback plus the
3.0 invariants cds-fb-1/2/3), and every rejection must name the JSON path so the EHR's
developers can see what to fix.  The result is a tuple of frozen :class:`FeedbackItem` values
with normalised fields, so the store can build an idempotency key from them (feedback may
be sent more than once for the same card).  Unknown keys are ignored, as CDS Hooks expects
clients and services to tolerate additions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from cds_service.errors import CdsBadRequest

OUTCOMES = ("accepted", "overridden")
MAX_ITEMS = 100
MAX_SUGGESTIONS = 100
MAX_COMMENT_CHARS = 2000
MAX_ID_CHARS = 256      # card / suggestion uuids and codes: bounded so the store stays small
MAX_TEXT_CHARS = 1024   # Coding.system and Coding.display

# RFC 3339 date-time (a space instead of "T" is allowed by RFC 3339 §5.6's note).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


@dataclass(frozen=True)
class Coding:
    """The override reason the clinician picked (the sandbox echoes only code and system)."""

    code: str
    system: str | None = None
    display: str | None = None


@dataclass(frozen=True)
class FeedbackItem:
    """One validated feedback entry.

    ``outcome_timestamp`` is timezone-aware and converted to UTC, so the same instant written
    as ``...Z`` or ``...+00:00`` (or another offset) compares equal.
    """

    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: tuple[str, ...] = ()
    reason: Coding | None = None
    user_comment: str | None = None


def parse_feedback(body: object) -> list[FeedbackItem]:
    """Validate a feedback request body; raise :class:`CdsBadRequest` naming the bad JSON path."""
    if not isinstance(body, dict):
        raise CdsBadRequest('The feedback body must be a JSON object {"feedback": [...]}.')
    items = body.get("feedback")
    if not isinstance(items, list):
        raise CdsBadRequest("feedback must be an array of feedback items.")
    if not items:
        raise CdsBadRequest("feedback must contain at least one item.")
    if len(items) > MAX_ITEMS:
        raise CdsBadRequest(f"feedback has {len(items)} items; send at most {MAX_ITEMS} per request.")
    return [_parse_item(item, f"feedback[{index}]") for index, item in enumerate(items)]


def _parse_item(item: object, path: str) -> FeedbackItem:
    if not isinstance(item, dict):
        raise CdsBadRequest(f"{path} must be an object.")
    card = _string(item.get("card"), f"{path}.card", MAX_ID_CHARS, required=True)
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        raise CdsBadRequest(f"{path}.outcome must be 'accepted' or 'overridden'.")
    suggestions = _suggestions(item.get("acceptedSuggestions"), f"{path}.acceptedSuggestions")
    if outcome == "accepted" and not suggestions:
        raise CdsBadRequest(
            f"{path}.acceptedSuggestions is required when outcome is 'accepted' "
            'and must list at least one {"id": "<suggestion uuid>"}.'
        )
    reason, comment = _override_reason(item.get("overrideReason"), f"{path}.overrideReason")
    timestamp = _timestamp(item.get("outcomeTimestamp"), f"{path}.outcomeTimestamp")
    return FeedbackItem(
        card=card,
        outcome=outcome,
        outcome_timestamp=timestamp,
        accepted_suggestions=suggestions,
        reason=reason,
        user_comment=comment,
    )


def _string(value: object, path: str, limit: int, *, required: bool) -> str | None:
    """A non-empty string of at most ``limit`` characters (``None`` allowed unless required)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CdsBadRequest(f"{path} must be a non-empty string.")
    if "\x00" in value:  # never in an id or code; PostgreSQL text cannot store it
        raise CdsBadRequest(f"{path} must not contain NUL (\\u0000) characters.")
    if len(value) > limit:
        raise CdsBadRequest(f"{path} is longer than {limit} characters.")
    return value


def _suggestions(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CdsBadRequest(f'{path} must be an array of {{"id": "<suggestion uuid>"}} objects.')
    if len(value) > MAX_SUGGESTIONS:
        raise CdsBadRequest(f"{path} has more than {MAX_SUGGESTIONS} entries.")
    ids: list[str] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise CdsBadRequest(f'{path}[{index}] must be an object {{"id": "<suggestion uuid>"}}.')
        ids.append(_string(entry.get("id"), f"{path}[{index}].id", MAX_ID_CHARS, required=True))
    return tuple(ids)


def _override_reason(value: object, path: str) -> tuple[Coding | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise CdsBadRequest(f"{path} must be an object with reason and/or userComment.")
    reason = _coding(value.get("reason"), f"{path}.reason")
    comment = value.get("userComment")
    if comment is not None:
        if not isinstance(comment, str):
            raise CdsBadRequest(f"{path}.userComment must be a string.")
        if len(comment) > MAX_COMMENT_CHARS:
            raise CdsBadRequest(f"{path}.userComment is longer than {MAX_COMMENT_CHARS} characters.")
        if "\x00" in comment:
            raise CdsBadRequest(f"{path}.userComment must not contain NUL (\\u0000) characters.")
        comment = comment.strip() or None
    if reason is None and comment is None:
        raise CdsBadRequest(f"{path} must carry a reason, a userComment, or both.")
    return reason, comment


def _coding(value: object, path: str) -> Coding | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CdsBadRequest(f"{path} must be a Coding object with code (and optional system, display).")
    return Coding(
        code=_string(value.get("code"), f"{path}.code", MAX_ID_CHARS, required=True),
        system=_string(value.get("system"), f"{path}.system", MAX_TEXT_CHARS, required=False),
        display=_string(value.get("display"), f"{path}.display", MAX_TEXT_CHARS, required=False),
    )


def _timestamp(value: object, path: str) -> datetime:
    """An RFC 3339 date-time with a zone (the spec says UTC), returned in UTC."""
    hint = "an RFC 3339 date-time with a time zone, e.g. 2024-05-01T12:30:00Z"
    if value is None:
        raise CdsBadRequest(f"{path} is required: {hint}.")
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise CdsBadRequest(f"{path} must be {hint}.")
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CdsBadRequest(f"{path} is not a valid date-time ({exc}); it must be {hint}.") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:  # unreachable after the regex; kept as a guard
        raise CdsBadRequest(f"{path} must carry a time zone: {hint}.")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
        raise CdsBadRequest(f"{path} is out of range; it must be {hint}.") from None
