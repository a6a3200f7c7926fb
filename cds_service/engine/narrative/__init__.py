"""Reading the clinical narrative: notes, report text and annotations as evidence.

A chart keeps most of what the guidelines ask for ("saddle anesthesia", "pain wakes him at
night", "unable to tolerate PT") in words, not codes.  This package finds those words and turns
each counting mention into a :class:`~cds_service.model.ClinicalItem` the criteria read like any
coded fact, with the sentence quoted for the card:

* ``texts``      — where a chart keeps narrative (DocumentReference attachments, report
  conclusions, ``note`` annotations, ``valueString``, an order's reason text), dated and capped;
* ``markup``     — attachment bytes to text (base64, charset, HTML without its markup);
* ``lexicon``    — the concepts of ``mappings/narrative.json``: phrases, token patterns, what
  each stands for;
* ``sentences``  — a fast pre-filter: only sentences with a lexicon word (and the section
  headers above them) go through the NLP pipeline;
* ``pipeline``   — medspaCy on a blank spaCy pipeline (target matcher, ConText, sectionizer):
  negated, family, hypothetical, uncertain and historical mentions;
* ``durations``  — time spans written in text ("LBP x 8 wks", "since October");
* ``reader``     — the whole: texts → mentions (cached by content hash) → clinical items.

Text can make a criterion met, never not-met (criteria.py keeps that rule).
"""
