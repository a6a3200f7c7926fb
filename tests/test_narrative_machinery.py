"""The reading machinery against medspaCy's own components: each shortcut taken for speed (#13 §5)
must give what the medspaCy component it stands in for gives, on the annotated corpora."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cds_service.engine.narrative.pipeline import literal_variants, spelled_out
from cds_service.engine.narrative.reader import load_reader
from cds_service.engine.narrative.sentences import shorten

ROOT = Path(__file__).resolve().parents[1]
CORPORA = [ROOT / "tests" / "narrative" / name for name in ("corpus.json", "corpus-fresh.json")]


@pytest.fixture(scope="module")
def reader():
    return load_reader(ROOT / "mappings" / "narrative.json")


def shipped_lexicon() -> dict:
    """The shipped lexicon as data, for a test to change one thing in it."""
    return json.loads((ROOT / "mappings" / "narrative.json").read_text(encoding="utf-8"))


def written(folder: Path, lexicon: dict) -> Path:
    """``lexicon`` saved as ``folder``/narrative.json (the reader is cached by path and content)."""
    path = folder / "narrative.json"
    path.write_text(json.dumps(lexicon), encoding="utf-8")
    shutil.copy(ROOT / "mappings" / "known_words.json", folder)     # the spelling rules' words, named beside it
    return path


def corpus_rows() -> list[str]:
    return [row["text"] for path in CORPORA for row in json.loads(path.read_text(encoding="utf-8"))["rows"]]


def charts(rows: list[str]) -> list[str]:
    """Notes with section titles, built from corpus sentences: what falls under "Family history:"
    or "PMH:" is flagged by its section, and the next title ends it."""
    return ["HPI:\n" + " ".join(rows[i:i + 4]) + "\nFamily history:\n" + " ".join(rows[i + 4:i + 7])
            + "\nPMH: " + " ".join(rows[i + 7:i + 10]) + "\nPatient instructions:\n" + rows[i + 10]
            + "\nAssessment/Plan:\n" + rows[i + 11] for i in range(0, len(rows) - 12, 12)]


def test_sections_give_the_flags_medspacys_sectionizer_gives(reader):
    from medspacy.section_detection import SectionRule
    pipeline = reader.pipeline
    reference = pipeline.nlp.add_pipe("medspacy_sectionizer", name="reference_sectionizer")
    known = {rule.literal.lower() for rule in reference.rules}
    reference.add([SectionRule(title, category) for category, titles in reader.lexicon.section_titles.items()
                   for title in titles if title.lower() not in known])      # as Sections adds them
    try:
        compared, in_flagged_section = compare_with_sectionizer(reader)
    finally:
        pipeline.nlp.remove_pipe("reference_sectionizer")
    assert compared > 500 and in_flagged_section > 100     # mentions inside flagged sections were compared


def compare_with_sectionizer(reader) -> tuple[int, int]:
    pipeline = reader.pipeline
    compared = in_flagged_section = 0
    for text in charts(corpus_rows()):
        shortened = shorten(text, reader.lexicon, pipeline.is_section)
        if shortened is None:
            continue
        doc = pipeline.nlp(shortened.text)         # the reference sectionizer runs last, after ConText
        with pipeline.nlp.select_pipes(disable=["reference_sectionizer"]):
            ours = [(m.start, m.end, m.negated, m.family, m.historical, m.hypothetical, m.uncertain)
                    for m in pipeline.mentions(shortened)]
        theirs = []
        for ent in doc.ents:
            lexicon_flags = {flag for flag, categories in reader.lexicon.sections.items() if ent._.section_category in categories}
            theirs.append((shortened.original(ent.start_char), shortened.original(ent.end_char - 1) + 1, ent._.is_negated,
                           ent._.is_family or "family" in lexicon_flags, ent._.is_historical or "historical" in lexicon_flags,
                           ent._.is_hypothetical or "hypothetical" in lexicon_flags, ent._.is_uncertain))
            in_flagged_section += ent._.section_category in pipeline.sections.flags
        assert ours == theirs
        compared += len(ours)
    return compared, in_flagged_section


def test_pre_filter_keeps_every_header_the_section_rules_may_match(reader):
    sections = reader.pipeline.sections
    for header in ("family history:", "family  history :", "pmhx:", "past medical hx:", "mhx:"):
        assert sections.may_be_title(header), header
    assert not sections.may_be_title("diet discussed:")


def test_a_word_only_context_pattern_becomes_phrases_and_ours_win_identical_phrases():
    from medspacy.context import ConTextRule
    default = ConTextRule("wife", "FAMILY", direction="FORWARD")
    ours = ConTextRule("relatives", "FAMILY", direction="BIDIRECTIONAL",
                       pattern=[{"LOWER": {"IN": ["wife", "husband"]}, "IS_SPACE": False}])
    colon = ConTextRule(": no", "NEGATED_EXISTENCE", direction="FORWARD", pattern=[{"TEXT": ":"}, {"LOWER": "no"}])
    rules = spelled_out([default, ConTextRule(": no", "NEGATED_EXISTENCE", direction="BACKWARD")], [ours, colon], ConTextRule)
    phrases = {(r.literal, r.direction) for r in rules}
    assert phrases == {("wife", "BIDIRECTIONAL"), ("husband", "BIDIRECTIONAL"), (": no", "FORWARD")}
    assert all(r.pattern is None for r in rules)
    wildcard = ConTextRule("now resolved", "HISTORICAL", pattern=[{"LOWER": "now", "OP": "*"}, {"LOWER": "resolved"}])
    assert literal_variants(wildcard, ConTextRule) == [wildcard]     # a wildcard stays a token pattern
    cased = ConTextRule("No", "NEGATED_EXISTENCE", pattern=[{"TEXT": "No"}])
    assert literal_variants(cased, ConTextRule) == [cased]            # case-sensitive text stays a pattern


def test_line_breaks_end_sentences_and_a_leading_question_mark_does_not(reader):
    doc = reader.pipeline.nlp("Back pain x 3 wks\nDenies fever. ? cauda equina, r/o.")
    sentences = [s.text.strip() for s in doc.sents]
    assert sentences[0] == "Back pain x 3 wks" and "? cauda equina" in sentences[-1]
    assert not any(s == "?" for s in sentences)
    doc = reader.pipeline.nlp("Pt w/ ? cauda equina symptoms. Worse? Yes.")     # a space before it, on the word
    assert [s.text.strip() for s in doc.sents] == ["Pt w/ ? cauda equina symptoms.", "Worse?", "Yes."]
    found = {m.concept: m for m in reader.mentions("Pt w/ ? cauda equina symptoms")}
    assert found["cauda-equina-syndrome"].uncertain


def test_section_titles_of_the_lexicon_join_medspacys(tmp_path):
    lexicon = shipped_lexicon()
    text = "HPI: low back pain x 2 wks.\nFamHx:\nOsteoporosis.\nPlan: PT."
    lexicon["section_titles"] = {}
    path = written(tmp_path, lexicon)
    before = {(c.id, m.family) for m, c, _ in load_reader(path).found(text)}
    lexicon["section_titles"] = {"family_history": ["FamHx:"]}
    written(tmp_path, lexicon)
    after = {(c.id, m.family) for m, c, _ in load_reader(path).found(text)}
    assert ("osteoporosis", False) in before and ("osteoporosis", True) in after
    assert ("low-back-pain", False) in after            # the section ends at the next title


def test_a_malformed_section_titles_entry_is_refused(tmp_path):
    from cds_service.engine.narrative.lexicon import load_lexicon
    from cds_service.errors import CdsConfigError
    lexicon = shipped_lexicon()
    lexicon["section_titles"] = {"family_history": "FHx:"}
    path = written(tmp_path, lexicon)
    with pytest.raises(CdsConfigError, match="section_titles"):
        load_lexicon(path)


def test_a_pattern_is_gated_by_its_anchored_expressions_and_only_those(reader):
    from cds_service.engine.narrative.needs import text_needs
    gates = text_needs([{"LOWER": {"REGEX": "^c[4-8]$"}}, {"LOWER": {"REGEX": "^x$|^y$"}},
                        {"LOWER": {"REGEX": "^(l[2-5]|s1)$"}}, {"LOWER": {"REGEX": "^[|(]z$"}},
                        {"LOWER": {"REGEX": "^a(?!b)$"}}, {"LOWER": {"REGEX": "^[0-4]/5$"}, "OP": "?"},
                        {"LOWER": "radicular"}])
    # an alternation at the top, a lookaround and optional tokens are not gates; a grouped one is
    assert [g.pattern for g in gates] == ["c[4-8]", "(l[2-5]|s1)", "[|(]z"]
    for sentence, concept in (("Pain in a C6 distribution, worse at night.", "cervical-radiculopathy"),
                              ("Pain in an L5 distribution.", "lumbar-radiculopathy")):
        assert concept in {c.id for m, c, _ in reader.found(sentence)}   # gated patterns still match


@pytest.mark.parametrize("sentence, days", [
    ("LBP x 8 wks, worse with sitting.", 56),
    ("Bilat LE weakness, onset over 48 hrs.", 2),
    ("Neck pain 6/10 after MVC yesterday.", 1),
    ("Erectile dysfunction new in past month.", 30),
    ("Back pain that started a few weeks ago.", 21),
    ("Seen today for back pain x 3 wks.", 21),            # "today" dates the visit, not the onset
    ("54 yo with back pain.", None),                       # an age is no span
    ("Back pain since 10/1.", 63),
])
def test_spans_written_in_words_date_the_onset(sentence, days):
    from datetime import date
    from cds_service.engine.narrative.durations import span_days
    assert span_days(sentence, sentence.lower().find("pain") if "pain" in sentence else 0, date(2026, 12, 3)) == days


def test_the_gates_see_every_word_spacys_tokens_hold(reader):
    """A gate that says no to a sentence the matcher would match loses the mention: every word of
    every spaCy token must be among the words the gates see ("cannot" is "can" "not")."""
    from cds_service.engine.narrative.needs import WORD
    words = reader.pipeline.words
    texts = corpus_rows() + ["Pt cannot lie flat; couldn't tolerate MRI, gonna need sedation. 10mg x2. Can not sit."]
    missing = {(token.lower_, text) for text in texts for token in reader.pipeline.nlp.make_doc(text)
               if not set(WORD.findall(token.lower_)) <= words(text.lower())}
    assert not missing
    assert {"can", "not", "cannot", "could", "mg"} <= words("pt cannot sit, couldn't walk, 10mg; can not stand")


def test_a_pattern_needing_can_not_reads_cannot(tmp_path):
    lexicon = shipped_lexicon()
    concept = next(c for c in lexicon["concepts"] if c["id"] == "mri-not-possible")
    concept["patterns"] = [[{"LOWER": "can"}, {"LOWER": "not"}, {"LOWER": "lie"}, {"LOWER": "flat"},
                            {"LOWER": {"REGEX": "^(for|during)$"}}]]
    path = written(tmp_path, lexicon)
    found = {c.id for m, c, _ in load_reader(path).found("Pt cannot lie flat for the scanner.")}
    assert "mri-not-possible" in found


def test_a_terminator_can_end_some_scopes_and_not_others(tmp_path):
    """medspaCy's TERMINATE ends every scope: "reported" ended the family scope of "Mother" too."""
    lexicon = shipped_lexicon()
    lexicon["context_rules"] = [r for r in lexicon["context_rules"] if r.get("literal") != "reports"] + [
        {"literal": "reports", "category": "NEGATED_EXISTENCE", "direction": "TERMINATE",
         "pattern": [{"LOWER": {"IN": ["reports", "reported", "endorses"]}}]}]
    path = written(tmp_path, lexicon)
    said = lambda reader, text: {(c.id, m.counts) for m, c, _ in reader.found(text)}    # noqa: E731
    ending_all = load_reader(path)
    assert ("osteoporosis", True) in said(ending_all, "Mother reported to have osteoporosis.")
    lexicon["context_rules"][-1]["terminates"] = ["NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL"]
    written(tmp_path, lexicon)
    selective = load_reader(path)
    assert ("osteoporosis", False) in said(selective, "Mother reported to have osteoporosis.")
    assert said(selective, "Denies fever, reports chills.") == {("fever", False), ("chills", True)}
    lexicon["context_rules"][-1]["terminates"] = ["FAMILY", "OTHER"]
    written(tmp_path, lexicon)
    from cds_service.engine.narrative.lexicon import load_lexicon
    from cds_service.errors import CdsConfigError
    with pytest.raises(CdsConfigError, match="terminates"):
        load_lexicon(path)


def test_an_abbreviations_period_does_not_end_the_sentence(reader):
    """A conditional before "e.g." governs what follows it: split there, the finding counted."""
    from cds_service.engine.narrative.sentences import spans
    text = "Return to the ED if new symptoms, e.g. saddle anesthesia or incontinence. Pain approx. 3 wks."
    assert len(spans(text)) == 2
    said = {(c.id, m.counts) for m, c, _ in reader.found(text)}
    assert ("saddle-anesthesia", False) in said and ("saddle-anesthesia", True) not in said
    assert [s.text for s in reader.pipeline.nlp("Options incl. PT and meds. Next.").sents][0] == "Options incl. PT and meds."


def test_one_phrase_can_be_several_concepts(reader, tmp_path):
    """A span holds one entity, so "spastic gait" (a gait) was never also spasticity."""
    said = {(c.id, m.counts) for m, c, _ in reader.found("Spastic gait with scissoring.")}
    assert {("gait-abnormality", True), ("spasticity", True), ("upper-motor-neuron-signs", True)} <= said
    lexicon = shipped_lexicon()
    gait = next(c for c in lexicon["concepts"] if c["id"] == "gait-abnormality")
    gait["phrase_implies"] = {"a phrase it does not list": ["spasticity"]}
    path = written(tmp_path, lexicon)
    from cds_service.engine.narrative.lexicon import load_lexicon
    from cds_service.errors import CdsConfigError
    with pytest.raises(CdsConfigError, match="phrase_implies"):
        load_lexicon(path)


def test_gated_context_patterns_match_what_spacys_matcher_matches(reader):
    """ConText's token patterns are tried only on documents holding their words
    (:class:`GatedContextPatterns`): on the corpus rows and charts, the same matches as spaCy's
    Matcher with every pattern."""
    from spacy.matcher import Matcher
    from cds_service.engine.narrative.targets import GatedContextPatterns
    pipe = reader.pipeline
    inner = pipe.nlp.get_pipe("medspacy_context")._ConText__matcher
    gated = inner._MedspacyMatcher__matcher
    assert isinstance(gated, GatedContextPatterns) and gated.entries
    plain = Matcher(pipe.nlp.vocab)
    for rule in inner.rules:
        if isinstance(rule.pattern, list):
            plain.add(rule._rule_id, [rule.pattern])
    rows = corpus_rows()
    docs = [pipe.nlp(text) for text in rows + charts(rows)]
    found = [sorted(gated(doc)) for doc in docs]
    assert found == [sorted(plain(doc)) for doc in docs]
    assert sum(map(len, found)) > 20          # the patterns did match somewhere


def test_the_phrase_check_of_the_pre_filter_never_loses_a_mention(reader, monkeypatch):
    """The pre-filter keeps a sentence only where a phrase is written in it (spaces aside) or a
    token pattern's words and expressions are there (``Lexicon.may_match``): on the corpus rows
    and charts, every mention the pipeline finds without that check is still found, with the
    same flags."""
    from cds_service.engine.narrative.lexicon import Lexicon
    from cds_service.engine.narrative.sentences import spans
    rows = corpus_rows()
    texts = rows + charts(rows)

    def read(text):
        kept = shorten(text, reader.lexicon, reader.pipeline.is_section, reader.pipeline.words, reader.pipeline.speller)
        return [m.to_list()[:3] + m.to_list()[5:] for m in reader.pipeline.mentions(kept)] if kept else []

    checked = [read(text) for text in texts]
    words = [(reader.pipeline.words(s.lower()), s.lower()) for text in rows for s in (text[a:b] for a, b in spans(text))]
    worded = [(w, s) for w, s in words if reader.lexicon.may_mention(w)]
    kept_out = sum(not reader.lexicon.may_match(w, s) for w, s in worded)
    monkeypatch.setattr(Lexicon, "may_match", lambda self, words, text: True)
    unchecked = [read(text) for text in texts]
    assert checked == unchecked and sum(map(len, checked)) > 1000
    assert kept_out > 50          # sentences holding a lexicon word that the check kept out
