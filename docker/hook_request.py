"""Print a CDS Hooks request for a synthetic patient loaded into the compose HAPI FHIR server.

    python3 docker/hook_request.py nia-radiculopathy-conservative-care \\
      | curl -s http://127.0.0.1:8080/cds-services/spine-imaging-order-select \\
             -H 'Content-Type: application/json' -d @-

Why: HAPI gives every loaded resource a new id, so a hook request must name those ids.  This
looks the Patient up by its synthetic MRN (the bundle's file name without .json) and its draft
ServiceRequest on HAPI as this machine reaches it (``--lookup``, http://127.0.0.1:8090/fhir),
and prints a request with no prefetch whose ``fhirServer`` is HAPI as the service reaches it
(``--fhir-server``, http://hapi:8080/fhir): the service then reads the whole record from HAPI,
as it would from an EHR.  Standard library only, so any python3 on the host runs it.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

MRN = "https://spine-cds.example.org/fhir/sid/synthetic-mrn"
TIMEOUT_S = 10


def search(base: str, rtype: str, **params: str) -> list[dict]:
    """The resources of one FHIR search (first page: a patient has one draft order)."""
    url = f"{base.rstrip('/')}/{rtype}?{urlencode(params)}"
    with urlopen(Request(url, headers={"Accept": "application/fhir+json"}), timeout=TIMEOUT_S) as answer:
        bundle = json.load(answer)
    return [e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") == rtype]


def build(lookup: str, fhir_server: str, mrn: str, hook: str = "order-select") -> dict:
    """The hook request for the patient whose synthetic MRN is ``mrn``."""
    patients = search(lookup, "Patient", identifier=f"{MRN}|{mrn}")
    if not patients:
        raise LookupError(f"No Patient with MRN {mrn} on {lookup}: check the loader's log "
                          "(docker compose logs loader) and the bundle name in cds_service/samples/patients.")
    patient_id = patients[0]["id"]
    orders = [o for o in search(lookup, "ServiceRequest", patient=patient_id, status="draft")
              if o.get("status") == "draft"]
    if not orders:
        raise LookupError(f"Patient/{patient_id} ({mrn}) has no draft ServiceRequest to decide on {lookup}.")
    context = {"userId": "Practitioner/demo-clinician", "patientId": patient_id,
               "draftOrders": {"resourceType": "Bundle", "type": "collection",
                               "entry": [{"resource": order} for order in orders]}}
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{order['id']}" for order in orders]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_server, "context": context}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a CDS Hooks request for a patient loaded into HAPI.")
    parser.add_argument("mrn", help="synthetic MRN: a bundle's file name without .json")
    parser.add_argument("--hook", choices=("order-select", "order-sign"), default="order-select")
    parser.add_argument("--lookup", default="http://127.0.0.1:8090/fhir", help="HAPI as this machine reaches it")
    parser.add_argument("--fhir-server", default="http://hapi:8080/fhir", help="HAPI as the service reaches it")
    args = parser.parse_args(argv)
    try:
        request = build(args.lookup, args.fhir_server, args.mrn, args.hook)
    except LookupError as exc:
        print(f"hook_request.py: {exc}", file=sys.stderr)
        return 1
    except (URLError, OSError, ValueError) as exc:
        print(f"hook_request.py: cannot search {args.lookup} ({exc}); is HAPI up and loaded? "
              "Check docker compose ps and docker compose logs loader.", file=sys.stderr)
        return 1
    json.dump(request, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
