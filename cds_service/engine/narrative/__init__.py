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
* ``needs``      — what a rule needs of a sentence before it can match (words, expressions);
* ``words``      — a sentence's words as spaCy's tokens hold them ("cannot" is "can" + "not");
* ``spelling``   — misspelled words read as the lexicon word meant ("stiffnes");
* ``sentences``  — a fast pre-filter: only sentences where a lexicon phrase is written or a
  pattern's words are (and the section headers above them) go through the NLP pipeline;
* ``pipeline``   — medspaCy on a blank spaCy pipeline: ``targets`` (phrases, and token patterns
  tried only where their words are), ConText (negated, family, hypothetical, uncertain and
  historical mentions) and ``sections`` (medspaCy's section rules, looked up per mention);
* ``durations``  — time spans written in text ("LBP x 8 wks", "since October");
* ``reader``     — the whole: texts → mentions (cached by content hash) → clinical items.

Text can make a criterion met, never not-met (criteria.py keeps that rule).
"""
