"""The one place that imports ``fhir.resources`` — always the R4B (FHIR R4) models.

The top-level ``fhir.resources`` modules are R5; importing them by mistake would validate R4
data against the wrong version.  Validation is used where it pays: the draft orders we decide
and the resources we emit.  Prefetched records are read as raw JSON (see ``facts.py``).
"""
from __future__ import annotations

from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.valueset import ValueSet
from pydantic import ValidationError

__all__ = ["Questionnaire", "QuestionnaireResponse", "ServiceRequest", "ValueSet", "validation_problems"]


def validation_problems(model, data: dict, limit: int = 3) -> list[str]:
    """Human-readable problems of ``data`` as ``model`` (empty when valid)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:limit]]
    return []
