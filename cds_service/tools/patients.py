"""The synthetic patients (``cds_service/samples/patients/``) as CDS Hooks requests.

Each patient is a tagged FHIR R4 transaction Bundle (built by scripts/build_patients.py): it can
be POSTed to any FHIR server (``spine-cds load-patients``), and it holds the draft spine order
and, in ``Bundle.meta.tag``, the program and the decision spine-cds must reach.  This module turns
a Bundle into the request an EHR would send — with a full prefetch, or with ``fhirServer`` only —
for the demo and the tests: :func:`describe` reads the tags, :func:`as_prefetch` builds the
prefetch (each id taken from the entry's ``urn:uuid`` fullUrl, references rewritten to
``Type/id``), and :func:`hook_request` sends the Bundle's draft order.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from cds_service.record.prefetch import KEY_TYPES, PREFETCH

PATIENTS = Path(__file__).resolve().parents[1] / "samples" / "patients"
TAG = "https://spine-cds.example.org/fhir/CodeSystem/synthetic-patient-"
DEFAULT_USER = "Practitioner/dr-alice"
DATE_FIELDS = ("effectiveDateTime", "performedDateTime", "onsetDateTime", "authoredOn", "started", "authored")


def patient_files() -> list[Path]:
    return sorted(PATIENTS.glob("*.json"))


def load_bundle(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def describe(bundle: dict) -> dict:
    """What a Bundle's ``meta.tag`` says: title, program, hook, expected decision, features."""
    tags: dict[str, list[dict]] = {}
    for tag in bundle.get("meta", {}).get("tag", []):
        tags.setdefault(tag["system"].removeprefix(TAG), []).append(tag)
    one = {facet: found[0] for facet, found in tags.items()}
    expect = {"outcome": one["expected-outcome"]["code"]}
    if "expected-indication" in one:
        expect["indication"] = one["expected-indication"]["code"]
    if "expected-alternative" in one:
        expect["alternative"] = {"id": one["expected-alternative"]["code"],
                                 "cpt": one["expected-alternative"]["display"].removeprefix("CPT ")}
    return {"name": one["title"]["code"], "title": one["title"]["display"], "program": one["program"]["code"],
            "hook": one["hook"]["code"], "expect": expect, "features": [t["code"] for t in tags.get("feature", [])]}


def local_ids(bundle: dict) -> dict[str, str]:
    """``urn:uuid:<u>`` fullUrl -> ``Type/<u>``: the ids the prefetch form of a Bundle uses."""
    return {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[1]}"
            for e in bundle["entry"]}


def rewrite_references(value, ids: dict[str, str]):
    """A copy of ``value`` with every ``reference`` found in ``ids`` replaced."""
    if isinstance(value, dict):
        return {k: (ids.get(v, v) if k == "reference" and isinstance(v, str) else rewrite_references(v, ids))
                for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_references(v, ids) for v in value]
    return value


def with_ids(bundle: dict, ids: dict[str, str]) -> list[dict]:
    """The Bundle's resources as a server holds them: ids assigned, references resolved."""
    return [{**rewrite_references(e["resource"], ids), "id": ids[e["fullUrl"]].split("/")[1]} for e in bundle["entry"]]


def _newest_first(resource: dict) -> str:
    return next((resource[f] for f in DATE_FIELDS if isinstance(resource.get(f), str)), "")


def as_prefetch(bundle: dict) -> dict:
    """The prefetch a complete EHR would send for the Bundle's patient: every key filled."""
    resources = with_ids(bundle, local_ids(bundle))
    prefetch: dict = {"patient": next(r for r in resources if r["resourceType"] == "Patient")}
    for key, types in KEY_TYPES.items():
        if key != "patient":
            found = sorted((r for r in resources if r["resourceType"] in types), key=_newest_first, reverse=True)
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in found]}
    if set(prefetch) != set(PREFETCH):
        raise ValueError("a prefetch key has no resource types in prefetch.KEY_TYPES")
    return prefetch


def hook_request(bundle: dict, ids: dict[str, str], *, hook: str | None = None, prefetch: dict | None = None,
                 fhir_server: str | None = None, token: str | None = None, user: str = DEFAULT_USER,
                 instance: str | None = None) -> dict:
    """The CDS Hooks request for the Bundle's draft order, its ids taken from ``ids``
    (:func:`local_ids` with a prefetch, :meth:`MedplumServer.load`'s answer with a server)."""
    resources = with_ids(bundle, ids)
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    order = next(r for r in resources if r["resourceType"] == "ServiceRequest" and r["status"] == "draft")
    hook = hook or describe(bundle)["hook"]
    context = {"userId": user, "patientId": patient["id"],
               "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}}
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{order['id']}"]
    body = {"hook": hook, "hookInstance": instance or str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "spine-cds"}
    return body
