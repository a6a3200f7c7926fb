"""Pages a person opens: the documentation Questionnaire and the operator report.

Why: a card's "Document it" link is opened by a clinician in a browser, and ``/report`` by an
operator; raw FHIR JSON helps neither.  Both answer by content negotiation: a browser (its
``Accept`` prefers ``text/html``) gets a page, every other client the JSON it always got —
``application/fhir+json`` stays the default for the Questionnaire, so FHIR clients and curl
(``*/*``) see no change, and the report stays a page unless JSON is preferred; ``?_format=json``
(FHIR's override) forces JSON.  Pages come from
autoescaped Jinja templates (``templates/``) with a Content-Security-Policy that allows no
script, and every link is absolute from the configured public base URL.
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, current_app, redirect, render_template, request

from cds_service.cards.questionnaires import base_url_for, build_questionnaire, documented_leaves, coded_labels, found_in_notes, \
    find_rule, route_path
from cds_service.errors import CdsAuthError, CdsNotFound
from cds_service.protocol import report_access
from cds_service.protocol.report import Labels, load_report, render_html, report_json
from cds_service.protocol.routes import authenticate_client

bp = Blueprint("pages", __name__, template_folder="templates")
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Vary": "Accept",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'"}
JSON_TYPES = ("application/fhir+json", "application/json")


def state():
    return current_app.extensions["spine_cds"]


def wants_html(default_html: bool = False) -> bool:
    """Whether to answer with a page: the client prefers HTML over JSON (a browser does).  A tie
    (``*/*``, no Accept) goes to ``default_html``: JSON for the Questionnaire, FHIR clients'
    resource, HTML for the report, which always was a page."""
    if request.args.get("_format") in ("json", "application/json", "application/fhir+json"):
        return False
    accept = request.accept_mimetypes
    html, json_ = accept["text/html"], max(accept[t] for t in JSON_TYPES)
    return html > json_ or (default_html and html == json_)


def base_url() -> str:
    return base_url_for(state().settings.public_base_url, request.url_root)


@bp.get("/questionnaires/<guideline_id>/<rule_id>")
def questionnaire(guideline_id: str, rule_id: str):
    """The documentation Questionnaire of an indication or gate (questionnaires.py).  No token:
    it is public guideline content, fetched by whoever follows the card's link."""
    guideline = state().registry.guidelines.get(guideline_id)
    rule = find_rule(guideline, rule_id) if guideline and guideline.encoded else None
    if rule is None:
        raise CdsNotFound(f"No questionnaire for {guideline_id!r} / {rule_id!r}: not an indication or gate "
                          "of an encoded guideline (GET /health lists the guidelines).")
    resource = build_questionnaire(guideline, rule, found_in_notes(request.args.get("found")))
    if not wants_html():
        return resource, 200, {"Content-Type": "application/fhir+json", "Vary": "Accept"}
    page = render_template(
        "questionnaire.html", questionnaire=resource, guideline=guideline, rule=rule,
        questions=[(item["text"], "initial" in item) for item in resource["item"] if item.get("type") == "boolean"],
        coded=coded_labels(rule, guideline.definitions),
        json_url=f"{base_url()}{route_path(guideline.id, rule.id)}?_format=json")
    return page, 200, {"Content-Type": "text/html; charset=utf-8", **PAGE_HEADERS}


@bp.get("/report")
def report():
    """Operator page: order decisions and override reasons (aggregates only, no PHI, no comment
    text).  HTML for a browser, JSON otherwise; who may open it: report_access.py."""
    if (answer := _report_login()) is not None:
        return answer
    st = state()
    report_data = load_report(st.store, Labels.from_registry(st.registry))
    if not wants_html(default_html=True):
        return report_json(report_data), 200, {"Cache-Control": "no-store", "Vary": "Accept"}
    page = render_html(report_data, generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return page, 200, {"Content-Type": "text/html; charset=utf-8", **PAGE_HEADERS}


def _report_login():
    """None when the caller may read the report; a redirect that sets the report cookie after a
    good ``?token=``; else a 401 saying what to send."""
    settings = state().settings
    if not settings.auth:
        return None
    token = settings.report_token
    given = request.args.get("token")
    if given is not None:
        if not (token and report_access.same(given, token)):
            raise report_access.denied(token)
        answer = redirect(f"{base_url()}/report", code=303)
        answer.set_cookie(report_access.COOKIE, report_access.cookie_value(token), max_age=report_access.COOKIE_MAX_AGE_S,
                          path="/report", httponly=True, samesite="Strict", secure=base_url().startswith("https://"))
        answer.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        return answer
    if report_access.operator_allowed(token, request.headers.get("Authorization"),
                                      request.cookies.get(report_access.COOKIE)):
        return None
    try:
        authenticate_client()
    except CdsAuthError:
        raise report_access.denied(token) from None
    return None
