"""Misspelled words are read as the lexicon word they were meant to be (#13 §2: "misspellings
found in real notes"), and real words, medical ones included, never are."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.engine.narrative.reader import load_reader
from cds_service.errors import CdsConfigError
from test_narrative_machinery import written

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reader():
    return load_reader(ROOT / "mappings" / "narrative.json")


def said(reader, text: str) -> list[tuple[str, str, bool]]:
    """(concept, the original characters of the mention, counts) of each mention of ``text``."""
    return [(m.concept, text[m.start:m.end], m.counts) for m in reader.mentions(text)]


@pytest.mark.parametrize("text, concept, written", [
    ("Mornign stiffnes in the low back for an hour", "morning-stiffness", "Mornign stiffnes"),
    ("Pain getting wrose over the last 2 weeks", "worsening-pain", "wrose"),
    ("POD 12, purulent drainage from the lumbar incison", "wound-over-spine", "incison"),
    ("DRE: decresed rectal tone", "anal-sphincter-tone-loss", "decresed rectal tone"),
])
def test_a_misspelled_word_reads_as_meant_and_the_quote_is_the_notes_own(reader, text, concept, written):
    found = {c: (w, counts) for c, w, counts in said(reader, text)}
    assert concept in found, found
    assert written in found[concept][0] and found[concept][1]


def test_a_misspelled_negation_still_negates(reader):
    found = said(reader, "Deneis fever, chills or saddle anesthesia.")
    assert {c for c, _, _ in found} >= {"fever", "chills", "saddle-anesthesia"}
    assert not any(counts for _, _, counts in found)


def test_a_shorter_correction_keeps_the_whole_original_word(reader):
    text = "Pt confussed, keeps pulling at lines"
    assert ("altered-consciousness", "Pt confussed", True) in said(reader, text)


@pytest.mark.parametrize("word", [
    "never",         # English, one letter from "fever"
    "peroneal",      # not in the English list; ICD-10-CM's (one letter from "perineal")
    "apyrexia",      # a first letter changes the meaning
    "keflex",        # a drug, not "reflex"
    "myopathy",      # one letter from the lexicon's own misspelling "mylopathy"
    "soleus",        # the lexicon's keep list
    "drip",          # shorter than min_length
])
def test_real_and_short_words_are_never_corrected(reader, word):
    assert reader.pipeline.speller.correct(word) is None


def test_only_correctly_spelled_rule_words_are_targets(reader):
    speller = reader.pipeline.speller
    assert "mylopathy" in speller.vocabulary and "mylopathy" not in speller.targets
    assert {"myelopathy", "stiffness", "denies"} <= speller.targets


def test_a_word_two_rule_words_are_one_edit_from_is_left_alone(tmp_path):
    from cds_service.engine.narrative.spelling import Speller
    speller = Speller({"stiffness", "stiffened"}, min_length=5)
    assert speller.correct("stiffnes") == "stiffness"
    speller = Speller({"leaking", "leaning"}, min_length=5)
    assert speller.correct("leakning") is None      # "leaking" or "leaning"?
    speller = Speller({"worse", "wrote"}, min_length=5)
    assert speller.correct("wrose") == "worse"      # two letters swapped is the likelier slip


@pytest.mark.parametrize("spelling, says", [
    ({"min_length": 2}, "at least 4"),
    ({"keep": "soleus"}, "keep a list"),
    ({"known_words": "missing.json"}, "scripts/build_known_words.py"),
    ({"guess": True}, "may only hold"),
])
def test_a_malformed_spelling_entry_is_refused_with_what_to_do(tmp_path, spelling, says):
    from cds_service.engine.narrative.lexicon import load_lexicon
    lexicon = json.loads((ROOT / "mappings" / "narrative.json").read_text(encoding="utf-8"))
    lexicon["spelling"] = spelling
    with pytest.raises(CdsConfigError, match=says):
        load_lexicon(written(tmp_path, lexicon))


def test_the_known_words_are_what_icd10cm_gives():
    """mappings/known_words.json is built from ICD-10-CM by a script: the file is that build."""
    result = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "scripts" / "build_known_words.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    words = json.loads((ROOT / "mappings" / "known_words.json").read_text(encoding="utf-8"))["words"]
    assert "peroneal" in words and len(words) > 5000


def test_the_deletion_index_finds_exactly_the_words_one_edit_away():
    """OneEdit (symmetric deletes) against a plain scan of every word with one_edit."""
    import random
    from cds_service.engine.narrative.spelling import OneEdit, one_edit
    assert one_edit("wrose", "worse") and one_edit("stiffnes", "stiffness") and one_edit("confussed", "confused")
    assert one_edit("fevar", "fever") and not one_edit("fever", "fever") and not one_edit("abcd", "badc")
    random.seed(7)
    words = {"".join(random.choice("abcde") for _ in range(random.randint(3, 6))) for _ in range(400)}
    index = OneEdit(words)
    queries = {"".join(random.choice("abcde") for _ in range(random.randint(2, 7))) for _ in range(400)}
    found = 0
    for query in queries:
        near = index.near(query)
        assert near == {w for w in words if one_edit(query, w)}
        found += len(near)
    assert found > 100
