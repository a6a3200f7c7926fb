"""Feedback body validation: every bad body is a 400 naming the JSON path (digest checks 46–47)."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from cds_service.errors import CdsBadRequest
from cds_service.store.feedback import Coding, FeedbackItem, parse_feedback

TS = "2024-05-01T12:30:00Z"
ACCEPTED = {"card": "card-1", "outcome": "accepted", "acceptedSuggestions": [{"id": "sugg-1"}],
            "outcomeTimestamp": TS}
OVERRIDDEN = {
    "card": "card-2",
    "outcome": "overridden",
    "overrideReason": {
        "reason": {"code": "need-more-info", "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                   "display": "Need more information"},
        "userComment": "Red flags documented in the note.",
    },
    "outcomeTimestamp": TS,
}


def body(**changes) -> dict:
    """A one-item accepted body with item keys replaced (value None removes the key)."""
    item = copy.deepcopy(ACCEPTED)
    for key, value in changes.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return {"feedback": [item]}


BAD = [
    ("not-object", [], "feedback body"),
    ("string", "feedback", "feedback body"),
    ("no-feedback", {}, "feedback must be an array"),
    ("feedback-object", {"feedback": {}}, "feedback must be an array"),
    ("empty", {"feedback": []}, "at least one"),
    ("too-many", {"feedback": [ACCEPTED] * 101}, "at most 100"),
    ("item-not-object", {"feedback": ["x"]}, "feedback[0] must be an object"),
    ("no-card", body(card=None), "feedback[0].card"),
    ("empty-card", body(card=""), "feedback[0].card"),
    ("card-number", body(card=7), "feedback[0].card"),
    ("card-too-long", body(card="x" * 257), "feedback[0].card"),
    ("no-outcome", body(outcome=None), "feedback[0].outcome must be 'accepted' or 'overridden'"),
    ("bad-outcome", body(outcome="dismissed"), "feedback[0].outcome must be 'accepted' or 'overridden'"),
    ("accepted-no-suggestions", body(acceptedSuggestions=None), "feedback[0].acceptedSuggestions"),
    ("accepted-empty-suggestions", body(acceptedSuggestions=[]), "feedback[0].acceptedSuggestions"),
    ("suggestions-object", body(acceptedSuggestions={"id": "s"}), "feedback[0].acceptedSuggestions"),
    ("suggestion-string", body(acceptedSuggestions=["s"]), "feedback[0].acceptedSuggestions[0]"),
    ("suggestion-no-id", body(acceptedSuggestions=[{"id": "a"}, {}]), "feedback[0].acceptedSuggestions[1].id"),
    ("suggestion-id-number", body(acceptedSuggestions=[{"id": 1}]), "feedback[0].acceptedSuggestions[0].id"),
    ("reason-not-object", body(overrideReason="no"), "feedback[0].overrideReason"),
    ("reason-empty", body(overrideReason={}), "feedback[0].overrideReason must carry"),
    ("reason-blank-comment", body(overrideReason={"userComment": "  "}), "feedback[0].overrideReason must carry"),
    ("reason-coding-string", body(overrideReason={"reason": "x"}), "feedback[0].overrideReason.reason"),
    ("reason-no-code", body(overrideReason={"reason": {"system": "s"}}), "feedback[0].overrideReason.reason.code"),
    ("reason-bad-system", body(overrideReason={"reason": {"code": "c", "system": 3}}),
     "feedback[0].overrideReason.reason.system"),
    ("comment-number", body(overrideReason={"userComment": 5}), "feedback[0].overrideReason.userComment"),
    ("comment-too-long", body(overrideReason={"userComment": "x" * 2001}), "feedback[0].overrideReason.userComment"),
    ("no-timestamp", body(outcomeTimestamp=None), "feedback[0].outcomeTimestamp is required"),
    ("timestamp-number", body(outcomeTimestamp=1714566600), "feedback[0].outcomeTimestamp"),
    ("timestamp-no-zone", body(outcomeTimestamp="2024-05-01T12:30:00"), "feedback[0].outcomeTimestamp"),
    ("timestamp-date-only", body(outcomeTimestamp="2024-05-01"), "feedback[0].outcomeTimestamp"),
    ("timestamp-basic-format", body(outcomeTimestamp="20240501T123000Z"), "feedback[0].outcomeTimestamp"),
    ("timestamp-bad-day", body(outcomeTimestamp="2024-02-30T12:30:00Z"), "feedback[0].outcomeTimestamp"),
    ("timestamp-garbage", body(outcomeTimestamp="yesterday"), "feedback[0].outcomeTimestamp"),
    ("second-item-bad", {"feedback": [ACCEPTED, {**OVERRIDDEN, "outcome": "ignored"}]}, "feedback[1].outcome"),
]


@pytest.mark.parametrize("payload, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_bodies_are_rejected_with_the_path(payload, fragment):
    with pytest.raises(CdsBadRequest) as info:
        parse_feedback(payload)
    assert fragment in info.value.message
    assert info.value.status == 400


def test_accepted_item():
    [item] = parse_feedback({"feedback": [ACCEPTED]})
    assert item == FeedbackItem(
        card="card-1", outcome="accepted",
        outcome_timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc),
        accepted_suggestions=("sugg-1",),
    )


def test_overridden_item_with_reason_and_comment():
    [item] = parse_feedback({"feedback": [OVERRIDDEN]})
    assert item.outcome == "overridden"
    assert item.accepted_suggestions == ()
    assert item.reason == Coding(
        code="need-more-info",
        system="http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
        display="Need more information",
    )
    assert item.user_comment == "Red flags documented in the note."


def test_overridden_without_reason_and_with_code_only():
    plain = {"card": "c", "outcome": "overridden", "outcomeTimestamp": TS}
    code_only = {**plain, "overrideReason": {"reason": {"code": "x"}}}
    comment_only = {**plain, "overrideReason": {"userComment": "no"}}
    items = parse_feedback({"feedback": [plain, code_only, comment_only]})
    assert [i.reason for i in items] == [None, Coding(code="x"), None]
    assert [i.user_comment for i in items] == [None, None, "no"]


@pytest.mark.parametrize("stamp", [
    "2024-05-01T12:30:00Z", "2024-05-01T12:30:00+00:00", "2024-05-01T12:30:00z",
    "2024-05-01T14:30:00+02:00", "2024-05-01T07:30:00-05:00", "2024-05-01 12:30:00Z",
])
def test_timestamps_in_any_offset_are_the_same_utc_instant(stamp):
    [item] = parse_feedback(body(outcomeTimestamp=stamp))
    assert item.outcome_timestamp == datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    assert item.outcome_timestamp.utcoffset().total_seconds() == 0


def test_fractional_seconds_are_kept():
    [item] = parse_feedback(body(outcomeTimestamp="2024-05-01T12:30:00.123Z"))
    assert item.outcome_timestamp.microsecond == 123000


def test_unknown_keys_are_ignored_and_items_are_frozen():
    [item] = parse_feedback({"feedback": [{**ACCEPTED, "extension": {"x": 1}}], "extra": True})
    with pytest.raises(AttributeError):
        item.card = "other"  # type: ignore[misc]


def test_a_full_batch_of_100_is_accepted():
    assert len(parse_feedback({"feedback": [ACCEPTED] * 100})) == 100
