"""Which section of a note each mention sits in: medspaCy's section rules, looked up per mention.

medspaCy's ``Sectionizer`` finds section titles ("Family history:", "PMH:") with its packaged
rules (SecTag, MIMIC-III and VA practice) and then stamps every token of the document with its
section, one ``token._`` attribute at a time: on 30 notes that stamping was a fifth of the
reading time, for an answer this service needs only at the first token of each mention.  So the
same rules go through the same matcher (``MedspacyMatcher``, overlapping titles pruned as the
sectionizer does), and a mention's section is the last title at or before it — which is what the
sectionizer computes when, as with its default rules, no rule has parents or a maximum scope
(checked at start-up; a test compares the two on the corpora).

The lexicon's ``section_titles`` add titles medspaCy's rules lack ("FHx:").  Flags follow from
the section as they do in medspaCy (its default ``span_attrs``: past history means historical,
family history family, patient instructions hypothetical...) plus the lexicon's ``sections``.
"""
from __future__ import annotations

import re
from bisect import bisect_right

ATTRIBUTE_FLAGS = {"is_negated": "negated", "is_family": "family", "is_historical": "historical",
                   "is_hypothetical": "hypothetical", "is_uncertain": "uncertain"}


class Sections:
    """Section titles of a document, and the flags each section gives the mentions in it."""

    def __init__(self, nlp, lexicon_sections: dict[str, list[str]], lexicon_titles: dict[str, list[str]]):
        from medspacy.common.medspacy_matcher import MedspacyMatcher
        from medspacy.section_detection import SectionRule, Sectionizer
        from medspacy.section_detection.sectionizer import DEFAULT_ATTRS

        rules = Sectionizer(nlp, name="spine_cds_section_rules").rules   # its packaged rules, not a pipe
        known = {rule.literal.lower() for rule in rules}
        rules += [SectionRule(title, category) for category, titles in lexicon_titles.items()
                  for title in titles if title.lower() not in known]
        if any(rule.parents or rule.max_scope is not None for rule in rules):
            raise RuntimeError("medspaCy's section rules now have parents or scopes: use its Sectionizer as a pipe")
        self.matcher = MedspacyMatcher(nlp, name="spine_cds_sections", phrase_matcher_attr="LOWER")
        self.matcher.add(rules)
        self.flags: dict[str, set[str]] = {}
        for category, attributes in DEFAULT_ATTRS.items():
            self.flags.setdefault(category, set()).update(ATTRIBUTE_FLAGS[a] for a, on in attributes.items() if on)
        for flag, categories in lexicon_sections.items():
            for category in categories:
                self.flags.setdefault(category, set()).add(flag)
        titles = sorted({"".join(rule.literal.lower().split()) for rule in rules}, key=len, reverse=True)
        self._titles = (None if any(rule.pattern is not None for rule in rules)
                        else re.compile("|".join(map(re.escape, titles))))

    def may_be_title(self, header: str) -> bool:
        """Whether a section title may be in ``header`` (lower case): one of the rules' phrases
        is in it, spaces aside (so never a wrong no).  The pre-filter keeps only such headers:
        the rest ("Vital signs reviewed:") would only be more words to read."""
        return self._titles is None or self._titles.search("".join(header.split())) is not None

    def flagger(self, doc):
        """A function from a token index of ``doc`` to the flags its section gives."""
        titles = [(start, self.matcher.rule_map[doc.vocab.strings[match_id]].category)
                  for match_id, start, _end in sorted(self.matcher(doc), key=lambda m: m[1])]
        starts = [start for start, _ in titles]
        none: frozenset[str] = frozenset()

        def flags(token_index: int) -> set[str] | frozenset[str]:
            at = bisect_right(starts, token_index) - 1
            return self.flags.get(titles[at][1], none) if at >= 0 else none
        return flags
