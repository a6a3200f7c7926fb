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
