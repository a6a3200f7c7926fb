"""The attestation model: a clinician's yes/no answer to a ``documented`` criterion.

A ``documented`` leaf is something only the clinician's notes can show.  The clinician may answer
it in our Questionnaire (``cards/questionnaires.py`` renders it); a completed
QuestionnaireResponse comes back in the record and ``facts.py`` turns each answer into a tag on
the record: ``ATTESTED + link_id(label)`` for yes, ``DENIED + link_id(label)`` for no.
``criteria.documented`` reads those tags.  This module is the vocabulary both sides share, so
the pure core never imports the renderer.

Question ids are derived from the leaf's label alone (a readable slug plus a hash), so they are
stable across releases and the same requirement worded the same way in two guidelines is the
same question: one attestation answers both.
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator

from cds_service.engine.fhir_dates import first_date
from cds_service.model import ClinicalItem

CANONICAL_BASE = "https://spine-cds.example.org/fhir/Questionnaire/"
ATTESTED = "attestation:"              # ClinicalItem.valuesets tag: the clinician answered yes
DENIED = "attestation-denied:"         # ... answered no
ATTESTATION_WINDOW_DAYS = 183          # default validity: an attestation is about this episode
_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)
def link_id(label: str) -> str:
    """The question id of a ``documented`` leaf: a slug of its label and 8 hex digits of its hash.

    Whitespace is normalised first so re-wrapping a label in the JSON does not change the id.
    Memoised: every decision looks up the ids of the guideline's documented leaves (labels come
    from the mappings, so the cache is bounded by them).
    """
    text = " ".join(label.split())
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    slug = _SLUG_CHARS.sub("-", text.lower()).strip("-")
    if len(slug) > 48:
        slug = slug[:48].rsplit("-", 1)[0] or slug[:48]
    return f"{slug}-{digest}" if slug else digest


def attestation_items(response: dict) -> Iterator[ClinicalItem]:
    """Boolean answers of a completed QuestionnaireResponse to one of our Questionnaires: one
    item per answer, tagged ``ATTESTED + linkId`` (yes) or ``DENIED + linkId`` (no) and dated
    when the response was authored.  Other questionnaires say nothing we can read."""
    canonical = response.get("questionnaire")
    if response.get("status") not in ("completed", "amended") or not isinstance(canonical, str) \
            or not canonical.startswith(CANONICAL_BASE) or not isinstance(response.get("id"), str):
        return
    ref, when = f"QuestionnaireResponse/{response['id']}", first_date(response, "authored")
    for link, text, answer in _boolean_answers(response.get("item")):
        yield ClinicalItem(ref=ref, resource_type="QuestionnaireResponse",
                           valuesets=frozenset({(ATTESTED if answer else DENIED) + link}),
                           display=f"{'attested' if answer else 'attested not so'}: {text or link}",
                           when=when, status="completed")


def _boolean_answers(items: object) -> Iterator[tuple[str, str | None, bool]]:
    """(linkId, text, valueBoolean) of every boolean answer, nested items and answers included."""
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        answers = item.get("answer") if isinstance(item.get("answer"), list) else []
        link = _text(item.get("linkId"))
        for answer in answers:
            if isinstance(answer, dict) and isinstance(answer.get("valueBoolean"), bool) and link:
                yield link, _text(item.get("text")), answer["valueBoolean"]
            if isinstance(answer, dict):
                yield from _boolean_answers(answer.get("item"))
        yield from _boolean_answers(item.get("item"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None

