"""Notes and report text as evidence (#13): what counts, what never does, bad input, privacy.

Built on the synthetic patients whose decisive evidence is only in words
(``cds_service/samples/patients/nia-cauda-equina-*.json``): the same chart decided with its note
rewritten, attached differently, or broken.
"""
from __future__ import annotations

import base64
import copy
import json
import logging

import pytest

from cds_service.tools.patients import PATIENTS, as_prefetch, hook_request, load_bundle, local_ids
from fhir_stub import FhirStub

SELECT = "/cds-services/spine-imaging-order-select"
SAY_IT = "Since yesterday she reports saddle anesthesia and new urinary retention; she has not voided since last night."


def note_chart(text: str | None = None, content_type: str = "text/plain; charset=utf-8", data: str | None = None,
               attachment: dict | None = None) -> dict:
    """The hook request of the 'cauda equina from a note' patient, its note replaced as asked."""
    bundle = load_bundle(PATIENTS / "nia-cauda-equina-from-note.json")
    body = hook_request(bundle, local_ids(bundle), prefetch=as_prefetch(bundle))
    [note] = [e["resource"] for e in body["prefetch"]["documentReferences"]["entry"]]
    if attachment is not None:
        note["content"] = [{"attachment": attachment}]
    elif text is not None or data is not None:
        encoded = data if data is not None else base64.b64encode(text.encode("utf-8")).decode()
        note["content"] = [{"attachment": {"contentType": content_type, "data": encoded}}]
    return body


def decide(client, body: dict) -> tuple[dict, dict]:
    response = client.post(SELECT, json=body)
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    return card, card["extension"]["spine-cds.decision"]


@pytest.fixture
def client(make_app):
    return make_app(SPINE_CDS_REPEAT_WINDOW_S="0").test_client()


def test_a_note_approves_and_the_card_quotes_it_with_source_date_and_offsets(client):
    card, decision = decide(client, note_chart())
    assert decision["outcome"] == "approve"
    assert "Progress note, 22 Nov 2026: \u2018" + SAY_IT + "\u2019" in card["detail"]
    body = note_chart()
    [note] = [e["resource"] for e in body["prefetch"]["documentReferences"]["entry"]]
    text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode()
    quoted = {text[int(a):int(b)] for a, b in (e.split("#char=")[1].split(",") for e in decision["evidence"]
                                               if e.startswith(f"DocumentReference/{note['id']}#char="))}
    assert any("urinary retention" in q for q in quoted)      # the offsets point into the note as read


@pytest.mark.parametrize("says", [
    "Denies saddle anesthesia, urinary retention or bowel incontinence.",
    "Mother had urinary retention after her surgery.",
    "Return to the ED if you develop saddle anesthesia or urinary retention.",
    "Possible urinary retention; rule out cauda equina syndrome.",
    # a terminator ("given") must not swallow the trigger after it, nor end the one before it
    "Pt given return precautions for saddle anesthesia or urinary retention.",
    "Return precautions given: come back for saddle anesthesia or urinary retention.",
])
def test_negated_family_hypothetical_and_uncertain_mentions_never_count(client, says):
    card, decision = decide(client, note_chart("HPI: Low back pain x 9 days. " + says))
    assert decision["outcome"] == "documentation"
    assert "Low back pain x 9 days" in card["detail"]      # the affirmed sentence is evidence ...
    assert says not in card["detail"]                      # ... the negated/family/hypothetical/uncertain one never


def test_html_notes_are_read_without_markup_and_scripts(client):
    html = ("<html><head><script>var x='urinary retention';</script><style>p{}</style></head>"
            f"<body><p>HPI:</p><p>{SAY_IT}</p></body></html>")
    card, decision = decide(client, note_chart(html, "text/html"))
    assert decision["outcome"] == "approve" and "<p>" not in card["detail"] and "var x" not in card["detail"]
    card, decision = decide(client, note_chart("<script>urinary retention and saddle anesthesia</script>", "text/html"))
    assert decision["outcome"] == "documentation"


@pytest.mark.parametrize("attachment, listed", [
    ({"contentType": "application/pdf", "data": base64.b64encode(b"%PDF-1.4 urinary retention").decode()}, "PDF"),
    ({"contentType": "text/plain", "data": "!!! not base64 @@@"}, "not read"),
    ({"contentType": "text/plain", "data": ""}, "empty attachment"),
    ({"contentType": "text/plain; charset=x-no-such-charset", "data": base64.b64encode(b"urinary retention").decode()},
     "unknown charset"),
    ({"contentType": "text/plain", "url": "https://elsewhere.example.org/notes/1.txt"}, "URL that was not read"),
])
def test_unreadable_attachments_are_listed_on_the_card_never_a_crash(client, attachment, listed):
    card, decision = decide(client, note_chart(attachment=attachment))
    assert decision["outcome"] == "documentation"
    assert any(listed in line for line in decision["notRead"]), decision["notRead"]
    assert "Not read by spine-cds" in card["detail"]


def test_latin1_note_in_its_declared_charset(client):
    text = "Anamn\u00e8se: " + SAY_IT
    data = base64.b64encode(text.encode("latin-1")).decode()
    card, decision = decide(client, note_chart(data=data, content_type="text/plain; charset=ISO-8859-1"))
    assert decision["outcome"] == "approve"


def test_a_huge_note_is_capped_and_said_so(make_app):
    client = make_app(SPINE_CDS_NOTE_MAX_CHARS="200", SPINE_CDS_REPEAT_WINDOW_S="0").test_client()
    card, decision = decide(client, note_chart("x " * 400 + SAY_IT))
    assert decision["outcome"] == "documentation"
    assert any("only its first 200 characters" in line for line in decision["notRead"])


def test_an_undated_note_counts_without_a_window_but_not_for_a_new_finding(client):
    body = note_chart(SAY_IT)
    [note] = [e["resource"] for e in body["prefetch"]["documentReferences"]["entry"]]
    del note["date"], note["context"]
    card, decision = decide(client, body)
    assert decision["outcome"] == "documentation"      # "new" bladder dysfunction needs a date: the note has none
    assert "Progress note (undated)" in card["detail"]  # ... yet the undated note still counts for back pain


def test_notes_off_reads_no_text(make_app):
    client = make_app(SPINE_CDS_NOTES="off", SPINE_CDS_REPEAT_WINDOW_S="0").test_client()
    card, decision = decide(client, note_chart())
    assert decision["outcome"] == "documentation"


def test_text_never_makes_a_criterion_not_met(registry):
    """Back pain '2 years' in a note must not turn a coded new back pain into 'not new'."""
    from datetime import date
    from cds_service.engine.criteria import finding
    from cds_service.engine.facts import extract_facts
    from cds_service.engine.narrative.texts import Limits
    from cds_service.engine.studies import spine_orders
    from cds_service.protocol.hook_request import parse_hook_request
    from cds_service.record.patient_record import build_record, read_prefetch

    body = note_chart("Low back pain for 2 years, unchanged.")
    hook = parse_hook_request(body, "order-select")
    record = build_record(hook.patient_id, read_prefetch(hook.prefetch)[0])
    [order] = spine_orders(hook.draft_orders, registry.catalog)
    today = date(2026, 11, 22)
    notes = registry.narrative.read(record, hook.draft_orders, today, Limits())
    assert any(item.quote for item in notes.items)
    facts = extract_facts(record, order, (), registry.tagger, today, notes.items)
    leaf = {"kind": "finding", "valueset": "icd10-sct-lumbar-back-pain", "label": "New back pain", "onset_max_days": 30}
    assert finding(leaf, facts).status.value == "met"          # the coded problem began 9 days ago
    text_only = extract_facts(record, order, (), registry.tagger, today, notes.items)
    text_only = type(text_only)(today, text_only.birth_date, tuple(i for i in text_only.items if i.quote), order)
    assert finding(leaf, text_only).status.value == "unknown"  # text alone: "2 years" is never not-met


def test_a_binary_on_the_ehr_fhir_server_is_fetched_and_another_host_never(make_app):
    body = note_chart()
    [note] = [e["resource"] for e in body["prefetch"]["documentReferences"]["entry"]]
    binary = {"resourceType": "Binary", "id": "note-1", "contentType": "text/plain",
              "data": base64.b64encode(SAY_IT.encode()).decode()}
    with FhirStub() as server:
        server.add(binary)
        client = make_app(SPINE_CDS_ALLOWED_FHIR_SERVERS=server.url, SPINE_CDS_REPEAT_WINDOW_S="0").test_client()
        body["fhirServer"] = server.url
        note["content"] = [{"attachment": {"contentType": "text/plain", "url": "Binary/note-1"}}]
        card, decision = decide(client, copy.deepcopy(body))
        assert decision["outcome"] == "approve" and "/Binary/note-1" in server.requests
        note["content"] = [{"attachment": {"contentType": "text/plain", "url": "http://127.0.0.1:1/Binary/note-1"}}]
        server.requests.clear()
        card, decision = decide(client, body)
        assert decision["outcome"] == "documentation" and not any("Binary" in p for p in server.requests)


def test_note_text_never_reaches_the_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    decide(client, note_chart())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "saddle" not in logged and "retention" not in logged and "voided" not in logged


def corpus_figures(name: str = "corpus.json", at_least_rows: int = 0, split: str = "all",
                   whole: bool = False) -> dict:
    """The overall figures of ``scripts/narrative_accuracy.py`` on ``tests/narrative/<name>``
    (``whole``: its whole result, regions and durations too)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from narrative_accuracy import score
    result = score(Path(__file__).resolve().parent / "narrative" / name, split=split)
    assert result["rows"] >= at_least_rows
    return result if whole else result["overall"]


def test_the_corpus_figures_hold():
    """The even half of the first corpus (scripts/narrative_accuracy.py --split test): once held
    out, now tuned on like the rest (#13 §4), so a floor against regressions, not a measure of
    unseen text."""
    result = corpus_figures(split="test", at_least_rows=390, whole=True)
    overall = result["overall"]
    assert overall["forbidden"] <= FORBIDDEN_AT_MOST
    assert overall["precision"] >= PRECISION_AT_LEAST and overall["recall"] >= RECALL_AT_LEAST
    assert result["region_right"]["share"] >= 0.95 and result["duration_right"]["share"] >= 0.9


def test_the_fresh_corpus_figures_hold():
    """The second corpus (written after the first tuning): the lexicon has since been tuned on it
    too (#13 §4), so a floor against regressions, not a measure of unseen text."""
    overall = corpus_figures("corpus-fresh.json", at_least_rows=500)
    assert overall["precision"] >= 0.985 and overall["recall"] >= 0.92 and overall["forbidden"] == 0


def test_the_third_corpus_figures_hold():
    """The third corpus (written blind by another clinician; P 0.929 R 0.779 before it was
    read): the lexicon has since been tuned on it (#13 §4, P 0.985 R 0.917, one hypothetical row
    counted), so a floor against regressions, not a measure of unseen text."""
    overall = corpus_figures("corpus-set3.json", at_least_rows=560)
    assert overall["precision"] >= 0.98 and overall["recall"] >= 0.93 and overall["forbidden"] <= 1


def test_the_unseen_corpus_figures_hold():
    """The fourth corpus, written blind: measured untouched at P 0.928, R 0.824, 10
    negated/family/hypothetical rows counted (#13 §4); the lexicon has since been tuned on it
    (data only: P 0.985, R 0.960, none counted), so a floor against regressions, not a measure
    of unseen text."""
    overall = corpus_figures("corpus-set4.json", at_least_rows=570)
    assert overall["precision"] >= 0.98 and overall["recall"] >= 0.955 and overall["forbidden"] == 0


# Just under what the even half measured after the lexicon was tuned on both corpora (#13 §4:
# precision 0.992, recall 0.967, none counted): a floor against regressions. Both corpora are
# tuned-on now; only a new blind corpus measures unseen text.
PRECISION_AT_LEAST, RECALL_AT_LEAST, FORBIDDEN_AT_MOST = 0.99, 0.96, 0


def test_mentions_are_shared_by_workers_through_the_host_cache(make_app, tmp_path, monkeypatch):
    """Two apps on one data folder stand for two workers: what one read, the other does not
    read again (the in-process memo is emptied in between, as another process would have it)."""
    from cds_service.engine.narrative.pipeline import Pipeline
    settings = {"SPINE_CDS_DATA_DIR": str(tmp_path / "data"), "SPINE_CDS_DATABASE": str(tmp_path / "store.sqlite3"),
                "SPINE_CDS_REPEAT_WINDOW_S": "0"}
    first, second = make_app(**settings), make_app(**settings)
    runs = []
    original = Pipeline.mentions
    monkeypatch.setattr(Pipeline, "mentions", lambda self, shortened: runs.append(shortened.text[:50]) or original(self, shortened))
    body = note_chart("Unique text for the shared cache test. " + SAY_IT)
    decide(first.test_client(), body)
    assert runs, "the first worker reads the note"
    runs.clear()
    reader = first.extensions["spine_cds"].registry.narrative
    reader._local.clear()                # another process has neither this worker's mentions
    reader._built.clear()                # nor its evidence: only the host cache can answer
    card, decision = decide(second.test_client(), body)
    assert decision["outcome"] == "approve" and runs == []


def test_a_repeated_read_reuses_the_notes_evidence(make_app, monkeypatch):
    """A repeated order-select neither reads a note again nor rebuilds its quoted evidence."""
    from cds_service.engine.narrative.reader import NarrativeReader
    app = make_app(SPINE_CDS_REPEAT_WINDOW_S="0")
    body = note_chart("Text for the evidence memo test. " + SAY_IT)
    first = decide(app.test_client(), body)
    built = []
    original = NarrativeReader._item
    monkeypatch.setattr(NarrativeReader, "_item", lambda self, *a: built.append(1) or original(self, *a))
    again = decide(app.test_client(), body)
    assert again[1]["outcome"] == first[1]["outcome"] == "approve" and built == []


@pytest.mark.parametrize("junk", [
    {"content": 7}, {"content": [7, None, "x"]}, {"content": [{"attachment": "x"}]},
    {"content": [{"attachment": {"data": 5, "contentType": ["text/plain"]}}]},
    {"content": [{"attachment": {"data": "dGV4dA==", "contentType": "text/plain; charset=\u0000"}}]},
    {"date": {"x": 1}, "context": "now"}, {"type": [1], "category": {"a": 1}}, {"status": ["current"]},
    {"content": [{"attachment": {"data": base64.b64encode(b"\xff\xfe\x00s\x00a\x00d").decode(), "contentType": "text/html"}}]},
])
def test_junk_in_a_note_is_never_a_crash(client, junk):
    body = note_chart()
    [note] = [e["resource"] for e in body["prefetch"]["documentReferences"]["entry"]]
    note.update(junk)
    response = client.post(SELECT, json=body)
    assert response.status_code == 200, response.get_json()


def test_a_question_mark_before_a_finding_is_doubt_and_implied_concepts_count(registry):
    found = {(c.id, m.counts) for m, c, _ in registry.narrative.found("Back pain since Monday. ? cauda equina syndrome.")}
    assert ("low-back-pain", True) in found and ("cauda-equina-syndrome", False) in found
    found = {c.id for m, c, _ in registry.narrative.found("Exam: L foot drop.") if m.counts}
    assert {"foot-drop", "lower-limb-weakness"} <= found


def test_a_lexicon_naming_an_unknown_implied_concept_is_refused(tmp_path):
    from cds_service.engine.narrative.lexicon import load_lexicon
    from cds_service.errors import CdsConfigError
    lexicon = {"concepts": [{"id": "a", "label": "a", "valuesets": ["x"], "phrases": ["alpha"], "implies": ["nope"]}]}
    (tmp_path / "narrative.json").write_text(json.dumps(lexicon))
    with pytest.raises(CdsConfigError, match="implies unknown"):
        load_lexicon(tmp_path / "narrative.json")


def test_the_form_opens_with_what_the_notes_answered(client, registry):
    """DTR pre-population: the card's form link names the questions a note answered; the
    Questionnaire carries initial yes for those, and nothing for made-up link ids."""
    from cds_service.engine.attestation import link_id
    asked = link_id("Saddle anesthesia")
    response = client.get(f"/questionnaires/nia-lumbar-spine-mri/cauda-equina-syndrome?found={asked},not-a-link,{'x' * 500}")
    items = {item["linkId"]: item for item in response.get_json()["item"]}
    assert items[asked]["initial"] == [{"valueBoolean": True}]
    assert sum("initial" in item for item in items.values()) == 1
    page = client.get(f"/questionnaires/nia-lumbar-spine-mri/cauda-equina-syndrome?found={asked}",
                      headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "(found in the notes)" in page and "checked" in page


def test_the_audit_keeps_the_note_reference_and_offsets_never_its_text(make_app):
    app = make_app(SPINE_CDS_REPEAT_WINDOW_S="0")
    decide(app.test_client(), note_chart())
    audit = json.dumps(app.extensions["spine_cds"].store.audit_records())
    assert "DocumentReference/" in audit and "#char=" in audit
    assert "saddle" not in audit.lower() and "retention" not in audit.lower() and "voided" not in audit


def test_an_attachment_over_the_byte_cap_is_not_decoded_and_said_so(make_app):
    client = make_app(SPINE_CDS_NOTE_ATTACHMENT_MAX_BYTES="100", SPINE_CDS_REPEAT_WINDOW_S="0").test_client()
    card, decision = decide(client, note_chart("x" * 200 + " " + SAY_IT))
    assert decision["outcome"] == "documentation"
    assert any("larger than 100 bytes" in line for line in decision["notRead"])


def test_every_concept_cites_rules_that_read_it(registry):
    """Each lexicon concept names the guideline rules that ask for it (scripts/narrative_cites.py),
    and each citation still reads one of the concept's value sets or documented labels, with the
    rule's own section and quote."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from narrative_cites import rules_reading
    data = json.loads((Path(__file__).resolve().parents[1] / "mappings" / "narrative.json").read_text(encoding="utf-8"))
    for entry in data["concepts"]:
        concept = registry.narrative.lexicon.concepts[entry["id"]]
        reading = {(g.id, r.id): r.source for g, r in rules_reading(registry, concept.tags)}
        assert entry.get("cites"), f"{entry['id']} cites no guideline rule"
        for cite in entry["cites"]:
            source = reading.get((cite["guideline"], cite["rule"]))
            assert source is not None, f"{entry['id']}: {cite['guideline']}/{cite['rule']} no longer reads it"
            assert cite["section"] == source["section"] and cite.get("quote") == source.get("quote")


def test_the_fifth_corpus_figures_hold():
    """The fifth corpus, written blind (discharge summaries, operative and radiology reports,
    nursing, pediatrics, oncology, pain clinic, telehealth): measured untouched with the spelling
    rules at P 0.947, R 0.840, 10 negated, family or hypothetical mentions counted; the lexicon
    has since been tuned on it (data only, after the set-4 round: P 0.954 R 0.866, 7 counted ->
    P 0.982 R 0.947, 1 counted: 'preop foot drop resolved' with 'BLE strength 5/5', where the
    implied lower-limb weakness shares the foot drop's historical flag), so a floor against
    regressions, not a measure of unseen text."""
    overall = corpus_figures("corpus-set5.json", at_least_rows=600)
    assert overall["precision"] >= 0.975 and overall["recall"] >= 0.94 and overall["forbidden"] <= 1


def test_the_sixth_corpus_figures_hold():
    """The sixth corpus, written blind (urgent care, sports medicine, geriatrics, home health,
    occupational health, neurology and neurosurgery consults, injection procedure notes,
    utilization review, dictated text) and never tuned on: the measure of unseen text.  Measured
    before the set-5 round P 0.925, R 0.814, 10 counted; after it and the question-mark fix
    P 0.928, R 0.828, 10 negated, family or hypothetical mentions counted — under the targets.  A
    floor against regressions; write a new blind corpus before tuning on it."""
    overall = corpus_figures("corpus-set6.json", at_least_rows=640)
    assert overall["precision"] >= 0.92 and overall["recall"] >= 0.82 and overall["forbidden"] <= 10
