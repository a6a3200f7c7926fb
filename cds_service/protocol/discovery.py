"""The CDS Services we advertise (``GET /cds-services``), as data."""
from __future__ import annotations

from cds_service.record.prefetch import PREFETCH

CRD_VERSION = "2.2"
CONFIGURATION_OPTIONS = [
    {"code": "coverage-info", "type": "boolean", "name": "Coverage information",
     "description": "Return the CRD coverage-information systemAction on each decided order (needs a Coverage).",
     "default": True},
    {"code": "appropriate-use", "type": "boolean", "name": "Approval cards",
     "description": "Cards saying an order meets the guideline, with the indication and evidence.", "default": True},
    {"code": "therapy-alternatives-opt", "type": "boolean", "name": "Alternative-study cards",
     "description": "Cards suggesting a different study (radiographs, ultrasound, CT or MRI) that replaces the order.",
     "default": True},
    {"code": "guideline", "type": "boolean", "name": "Documentation cards",
     "description": "Cards listing what the record lacks for the guideline, and cards saying no guideline applies.",
     "default": True},
    {"code": "alternative-delete-create", "type": "boolean", "name": "Alternatives as delete + create",
     "description": "Propose an alternative study as delete + create of the draft order instead of one update "
                    "of it (default: the service's SPINE_CDS_ALTERNATIVE_DELETE_CREATE setting, off).",
     "default": False},
    {"code": "max-cards", "type": "integer", "name": "Maximum cards",
     "description": "Return at most this many cards (one per decided order, in order of the draft orders).",
     "default": 10},
]
_COMMON = ("Checks each spine CT or MRI order (CPT 72125-72133, 72141-72158) against the imaging guideline "
           "of the patient's payer program and answers with one card per order: criteria met (with the "
           "evidence), a better study to order now, or exactly what documentation is missing.")
SERVICES = {
    "spine-imaging-order-select": {
        "hook": "order-select", "title": "Spine imaging criteria (order select)",
        "description": _COMMON + " Fires while the order is being written."},
    "spine-imaging-order-sign": {
        "hook": "order-sign", "title": "Spine imaging criteria and coverage (order sign)",
        "description": _COMMON + " At signing it also annotates each order with Da Vinci CRD coverage information."},
}
USAGE = ("Send Coverage (with its payer Organization) to route to the payer's program; without it the "
         "default program decides and the card says so. Reasons for the order (reasonCode, ICD-10-CM or "
         "SNOMED CT) and the patient's problems, procedures, medications, labs and prior imaging are used.")


def discovery_document() -> dict:
    """The discovery response body."""
    services = []
    for service_id, service in SERVICES.items():
        services.append({
            "id": service_id, **service, "prefetch": dict(PREFETCH), "usageRequirements": USAGE,
            "extension": {"davinci-crd.version": [CRD_VERSION],
                          "davinci-crd.configuration-options": CONFIGURATION_OPTIONS},
        })
    return {"services": services}


def configuration(extension: dict, defaults: dict | None = None) -> dict:
    """The request's ``davinci-crd.configuration`` merged over our defaults (and the operator's,
    ``defaults``); unknown codes ignored."""
    values = {option["code"]: option["default"] for option in CONFIGURATION_OPTIONS} | (defaults or {})
    requested = extension.get("davinci-crd.configuration") if isinstance(extension, dict) else None
    if isinstance(requested, dict):
        for option in CONFIGURATION_OPTIONS:
            value = requested.get(option["code"])
            if option["type"] == "boolean" and isinstance(value, bool):
                values[option["code"]] = value
            elif option["type"] == "integer" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                values[option["code"]] = value
    return values
