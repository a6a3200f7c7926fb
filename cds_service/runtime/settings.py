"""One registry of every setting the service reads, with its default and help text.

Each setting is a field of the frozen :class:`Settings` dataclass.  The field's metadata holds
the environment variable name, the parser for its string form and a help sentence; the README's
settings table is checked against this registry by ``tests/test_settings.py``.  Settings come
from the environment (``create_app()`` with no argument) or from a mapping passed to
``create_app(config)`` whose keys are the environment names.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.errors import CdsConfigError

_REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JWKS = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


def _on_off(text: str) -> bool:
    value = str(text).strip().lower()
    if value in {"on", "true", "1", "yes"}:
        return True
    if value in {"off", "false", "0", "no"}:
        return False
    raise ValueError("expected 'on' or 'off'")


def _issuers(text: str) -> dict[str, str]:
    value = json.loads(text) if isinstance(text, str) else text
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.startswith(("https://", "http://"))
        for k, v in value.items()
    ):
        raise ValueError('expected a JSON object {"<iss>": "<jwks url>"}')
    return dict(value)


def _url_list(text: str) -> tuple[str, ...]:
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = str(text).split(",")
    return tuple(item.strip().rstrip("/") for item in items if item.strip())


def _networks(text: str) -> tuple[str, ...]:
    import ipaddress
    items = list(text) if isinstance(text, (list, tuple)) else str(text).split(",")
    return tuple(str(ipaddress.ip_network(item.strip(), strict=False)) for item in items if item.strip())


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("expected a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("expected zero or a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("expected a positive whole number")
    return value


def _text(text: str) -> str:
    return str(text).strip()


def _iso_date(text: str) -> str:
    text = str(text).strip()
    if text:
        date.fromisoformat(text)  # raises ValueError with the reason
    return text


def _log_format(text: str) -> str:
    value = str(text).strip().lower()
    if value not in {"json", "text"}:
        raise ValueError("expected 'json' or 'text'")
    return value


REPORT_TOKEN_MIN = 32


def _secret(text: str) -> str:
    value = str(text).strip()
    if value and len(value) < REPORT_TOKEN_MIN:
        raise ValueError(f"expected at least {REPORT_TOKEN_MIN} characters (make one with "
                         "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or empty")
    return value


def _path(text: str) -> Path:
    return Path(str(text)).expanduser()


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "spine-cds")


def setting(env: str, default: Any, parse: Callable[[str], Any], help: str, secret: bool = False) -> Any:
    """Declare one setting: its environment name, default, parser and help sentence.  A secret is
    left out of the settings' repr and never quoted in a configuration error."""
    return dataclasses.field(default=default, repr=not secret,
                             metadata={"env": env, "parse": parse, "help": help, "secret": secret})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed, immutable settings; build with :func:`load_settings`."""

    auth: bool = setting(
        "SPINE_CDS_AUTH", "on", _on_off,
        "on: every call must carry a CDS client JWT (CDS Hooks 2.0); off: no verification, for local development only (a warning is logged at start).",
    )
    trusted_issuers: dict = setting(
        "SPINE_CDS_TRUSTED_ISSUERS", json.dumps({SANDBOX_ISSUER: SANDBOX_JWKS}), _issuers,
        'JSON object {"<iss>": "<jwks url>"}: the CDS clients we accept and where their public keys are. A token\'s own jku is ignored (never fetched): this URL decides.',
    )
    allowed_fhir_servers: tuple = setting(
        "SPINE_CDS_ALLOWED_FHIR_SERVERS", (), _url_list,
        "Comma-separated FHIR base URLs we may read from even though they are on a loopback, private or link-local address, or plain http. Public https servers need no entry.",
    )
    default_program: str = setting(
        "SPINE_CDS_DEFAULT_PROGRAM", "nia", _text,
        "Program used when the request carries no Coverage or its payer is not in mappings/programs.json (the card says which program was used).",
    )
    jwt_leeway_s: float = setting(
        "SPINE_CDS_JWT_LEEWAY_S", 5.0, _positive_float,
        "Clock skew tolerated on the JWT exp/iat claims, in seconds (the sandbox's iat can be up to 0.5 s in the future).",
    )
    jwt_max_age_s: float = setting(
        "SPINE_CDS_JWT_MAX_AGE_S", 3600.0, _positive_float,
        "Oldest iat accepted, in seconds; also how long a seen jti is remembered to refuse replays.",
    )
    jwks_cache_ttl_s: float = setting(
        "SPINE_CDS_JWKS_CACHE_TTL_S", 3600.0, _positive_float,
        "How long a trusted issuer's JWKS is cached before it is fetched again (an unknown kid triggers a refresh, at most once per SPINE_CDS_JWKS_REFRESH_INTERVAL_S).",
    )
    jwks_refresh_interval_s: float = setting(
        "SPINE_CDS_JWKS_REFRESH_INTERVAL_S", 10.0, _positive_float,
        "Fewest seconds between two fetches of one JWKS URL by a worker, whatever triggers them (unknown kids, expiry, a failed fetch): forged tokens cannot make us hammer an issuer's host.",
    )
    fhir_timeout_s: float = setting(
        "SPINE_CDS_FHIR_TIMEOUT_S", 2.5, _positive_float,
        "Timeout of each call to the EHR's FHIR server (connect and read), in seconds.",
    )
    fhir_max_pages: int = setting(
        "SPINE_CDS_FHIR_MAX_PAGES", 5, _positive_int,
        "How many pages of one search (Bundle next links) are followed before the rest is ignored.",
    )
    fhir_page_size: int = setting(
        "SPINE_CDS_FHIR_PAGE_SIZE", 200, _positive_int,
        "_count asked for in each FHIR search.",
    )
    fhir_workers: int = setting(
        "SPINE_CDS_FHIR_WORKERS", 8, _positive_int,
        "How many FHIR searches run in parallel in one worker process (shared by its concurrent hook calls).",
    )
    cache_ttl_s: float = setting(
        "SPINE_CDS_CACHE_TTL_S", 60.0, _positive_float,
        "How long patient data read from a FHIR server is reused across hook calls (order-select fires on every edit), in seconds.",
    )
    cache_max_bytes: int = setting(
        "SPINE_CDS_CACHE_MAX_BYTES", 268_435_456, _positive_int,
        "Most bytes the shared cache (patient data and other cached values) keeps on this host (per process with SPINE_CDS_CACHE_URL=memory); the least recently stored values go first. A single value over 1/16 of it is not cached. Redis keeps its own maxmemory.",
    )
    data_dir: Path = setting(
        "SPINE_CDS_DATA_DIR", _default_data_dir(), _path,
        "Folder for the embedded SQLite database (feedback and decisions) and, with PostgreSQL, the patient-data cache.",
    )
    database_path: str = setting(
        "SPINE_CDS_DATABASE", "", _text,
        "Where decisions, feedback and the audit trail are kept: a SQLite file, or a postgresql://user:pass@host/db URL for several instances; empty means spine-cds.sqlite3 in SPINE_CDS_DATA_DIR; ':memory:' keeps nothing.",
    )
    cache_url: str = setting(
        "SPINE_CDS_CACHE_URL", "", _text,
        "Where patient data read from FHIR servers (and other cached values) are kept: empty for a disk cache shared by every worker of this host (folder spine-cds-cache beside the SQLite database, or in SPINE_CDS_DATA_DIR), redis://host:6379/0 to share it between instances, or memory for one process only (tests, one-process tools).",
    )
    deadline_s: float = setting(
        "SPINE_CDS_DEADLINE_S", 2.8, _positive_float,
        "Longest time a hook call may take to gather the record, in seconds, counted from the call's arrival (time spent waiting for a worker counts): searches still running then are abandoned and the card says the check could not complete (CRD indeterminate, reason technical); a call that waited the whole deadline for a worker gets 503 with Retry-After.",
    )
    mappings_dir: Path = setting(
        "SPINE_CDS_MAPPINGS_DIR", str(_REPO_ROOT / "mappings"), _path,
        "Folder of guideline mappings, programs.json and studies.json.",
    )
    valuesets_dir: Path = setting(
        "SPINE_CDS_VALUESETS_DIR", str(_REPO_ROOT / "valuesets"), _path,
        "Folder of FHIR ValueSet JSON files with their expansions.",
    )
    cors_origins: tuple = setting(
        "SPINE_CDS_CORS_ORIGINS", ("*",), _url_list,
        "Comma-separated browser origins allowed by CORS, or * (tokens travel in the Authorization header, never in cookies).",
    )
    max_request_bytes: int = setting(
        "SPINE_CDS_MAX_REQUEST_BYTES", 20_000_000, _positive_int,
        "Largest hook request body accepted, in bytes (larger bodies get 413), and the most read from a FHIR server for one search.",
    )
    public_base_url: str = setting(
        "SPINE_CDS_PUBLIC_BASE_URL", "", _text,
        "Base URL clients call us at (e.g. https://cds.example.org); the JWT aud must name it. Empty: the address the server listens on (its IP and port, localhost on loopback, its host name), never the Host header a client sends.",
    )
    trusted_proxies: tuple = setting(
        "SPINE_CDS_TRUSTED_PROXIES", (), _networks,
        "Comma-separated addresses or networks (e.g. 10.0.0.5, 10.0.0.0/24) of proxies whose X-Forwarded-Proto and X-Forwarded-Host name the URL clients called (for the JWT aud); such a proxy must set them itself, not pass on its client's Host. Empty (default): forwarding headers are ignored.",
    )
    today: str = setting(
        "SPINE_CDS_TODAY", "", _iso_date,
        "Evaluation date (YYYY-MM-DD) instead of the real date — for demos, tests and replaying past calls; empty: today.",
    )
    alternative_delete_create: bool = setting(
        "SPINE_CDS_ALTERNATIVE_DELETE_CREATE", "off", _on_off,
        "on: an alternative study is proposed as delete + create of the draft order; off (default): as one update of the draft (same id, the alternative's CPT code), which the CDS Hooks sandbox applies. An EHR can choose per call with the CRD configuration option alternative-delete-create.",
    )
    compare_programs: bool = setting(
        "SPINE_CDS_COMPARE_PROGRAMS", "on", _on_off,
        "on: each card's detail also names the other programs whose criteria the same order meets on the same record.",
    )
    repeat_window_s: float = setting(
        "SPINE_CDS_REPEAT_WINDOW_S", 43200.0, _non_negative_float,
        "An order-sign card is left out when order-select already showed the same decision for the unchanged order within this many seconds (CRD: don't repeat guidance); 0 turns this off.",
    )
    notes: bool = setting(
        "SPINE_CDS_NOTES", "on", _on_off,
        "on: clinical notes (DocumentReference), report text and annotations are read as evidence (mappings/narrative.json); off: only coded data counts.",
    )
    note_max_chars: int = setting(
        "SPINE_CDS_NOTE_MAX_CHARS", 200_000, _positive_int,
        "Most characters read of one note or report (the rest is not read, and the card says so).",
    )
    notes_max_chars: int = setting(
        "SPINE_CDS_NOTES_MAX_CHARS", 2_000_000, _positive_int,
        "Most characters of narrative read for one hook call, all notes together (notes past it are listed as not read).",
    )
    note_attachment_max_bytes: int = setting(
        "SPINE_CDS_NOTE_ATTACHMENT_MAX_BYTES", 2_000_000, _positive_int,
        "Largest note attachment read, in bytes, whether sent inline (base64) or fetched from the EHR's FHIR server (Attachment.url on that server only).",
    )
    note_lookback_days: int = setting(
        "SPINE_CDS_NOTE_LOOKBACK_DAYS", 366, _positive_int,
        "Notes dated more than this many days before today are not read (undated notes are read; report text and annotations are always read).",
    )
    feedback_window_s: float = setting(
        "SPINE_CDS_FEEDBACK_WINDOW_S", 604800.0, _positive_float,
        "How long after a card was issued feedback on it is taken, in seconds (7 days). Feedback naming a card this service did not issue to the caller's client (JWT issuer) within this window is refused with 422 and not stored.",
    )
    report_token: str = setting(
        "SPINE_CDS_REPORT_TOKEN", "", _secret,
        "Operator token that opens GET /report when SPINE_CDS_AUTH=on (at least 32 characters): sent as Authorization: Bearer <token>, or once as /report?token=<token> in a browser, which then keeps an HttpOnly cookie for /report. Empty: /report takes only a CDS client JWT.",
        secret=True,
    )
    log_format: str = setting(
        "SPINE_CDS_LOG_FORMAT", "json", _log_format,
        "json: one JSON object per log line (for log shippers); text: human-readable lines for a terminal.",
    )
    log_level: str = setting(
        "SPINE_CDS_LOG_LEVEL", "INFO", _text,
        "Python log level (DEBUG, INFO, WARNING, ERROR). Logs never contain PHI, JWTs or access tokens.",
    )

    @property
    def note_limits(self):
        """The caps on narrative reading, or None when notes are off."""
        from cds_service.engine.narrative.texts import Limits
        return Limits(self.note_max_chars, self.notes_max_chars, self.note_attachment_max_bytes,
                      self.note_lookback_days) if self.notes else None

    @property
    def database_file(self) -> str:
        """The database actually used: a SQLite file, ':memory:', or a postgresql:// URL."""
        return self.database_path or str(Path(self.data_dir) / "spine-cds.sqlite3")


def registry() -> list[dataclasses.Field]:
    """Every setting field, in declaration order."""
    return list(dataclasses.fields(Settings))


def load_settings(source: Mapping[str, Any] | None = None) -> Settings:
    """Build :class:`Settings` from a mapping of environment names (default: ``os.environ``).

    Values may be strings (as in the environment) or already typed.  A bad value raises
    :class:`CdsConfigError` naming the setting and what it expects.
    """
    source = os.environ if source is None else source
    values: dict[str, Any] = {}
    for field in registry():
        env = field.metadata["env"]
        raw = source.get(env, field.default)
        if raw is None:
            raw = field.default
        try:
            values[field.name] = field.metadata["parse"](raw)
        except (ValueError, TypeError) as exc:
            shown = "(the value, not shown)" if field.metadata.get("secret") else repr(raw)
            raise CdsConfigError(f"{env}={shown} is invalid: {exc}. {field.metadata['help']}") from exc
    return Settings(**values)

