"""Load the synthetic patients into a FHIR server: ``spine-cds load-patients --fhir-base URL``.

Why: the docker compose demo starts an empty HAPI FHIR server, which the service then reads
as it would an EHR's.  This one-shot job waits (bounded, one progress line per attempt) until
``GET [base]/metadata`` answers an R4 CapabilityStatement — HAPI takes a minute or two to
start — then POSTs every transaction Bundle of ``cds_service/samples/patients`` and reports
what each created, above all the server-assigned Patient id a hook request must name.  A
bundle whose Patient (by identifier) is already there is skipped, so a rerun duplicates
nothing.  Any failure ends the run with exit status 1 and a message saying what to do next.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import requests

PATIENTS_DIR = Path(__file__).resolve().parents[1] / "samples" / "patients"
FHIR_JSON = "application/fhir+json"
CONNECT_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 10.0


class LoadError(Exception):
    """A failure that ends the run; the message says what to do next."""


@dataclass
class BundleResult:
    """What one bundle did on the server."""

    name: str
    patient: str | None                                # "Patient/<server id>"
    created: Counter = field(default_factory=Counter)  # resource type -> count (201)
    updated: Counter = field(default_factory=Counter)  # resource type -> count (200, e.g. a PUT)
    skipped: bool = False


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``load-patients`` options (the CLI module only dispatches)."""
    add = parser.add_argument
    add("--fhir-base", required=True, metavar="URL", help="FHIR R4 base URL to load into, e.g. http://hapi:8080/fhir")
    add("--dir", type=Path, default=PATIENTS_DIR,
        help="folder of FHIR transaction Bundles (*.json) (default: the bundled synthetic patients)")
    add("--wait", type=_positive, default=300.0, metavar="SECONDS",
        help="longest total wait for the server to answer GET [base]/metadata (default: 300)")
    add("--interval", type=_positive, default=3.0, metavar="SECONDS", help="pause between readiness attempts (default: 3)")
    add("--timeout", type=_positive, default=60.0, metavar="SECONDS", help="read timeout of each POST (default: 60)")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def load_main(args: argparse.Namespace) -> int:
    """Entry point of ``spine-cds load-patients``: 0 when every bundle is on the server, else 1."""
    try:
        load_patients(args.fhir_base, args.dir, wait_s=args.wait, interval_s=args.interval,
                      timeout_s=args.timeout)
    except LoadError as exc:
        print(f"spine-cds load-patients: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def load_patients(base: str, folder: Path, *, wait_s: float = 300.0, interval_s: float = 3.0,
                  timeout_s: float = 60.0, out: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> list[BundleResult]:
    """Wait for the server, load every bundle of ``folder``, print one line per bundle.

    The bundles are read and checked before waiting, so a broken file fails at once.
    ``clock`` and ``sleep`` are injectable so tests can exercise the bounded wait without waiting.
    """
    out = out or sys.stdout
    base = check_base(base)
    bundles = read_bundles(folder)
    results = []
    with requests.Session() as session:
        wait_for_server(session, base, wait_s, interval_s, out, clock, sleep)
        for path, bundle in bundles:
            results.append(load_bundle(session, base, path.name, bundle, timeout_s))
            print(describe(results[-1]), file=out, flush=True)
    skipped = sum(r.skipped for r in results)
    print(f"loaded {len(results) - skipped} bundle(s) into {base}; {skipped} already there", file=out, flush=True)
    return results


def check_base(base: str) -> str:
    parts = urlsplit(base.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"--fhir-base must be an absolute http(s) FHIR base URL such as "
                        f"http://hapi:8080/fhir, not {base!r}.")
    return base.strip().rstrip("/")


def read_bundles(folder: Path) -> list[tuple[Path, dict]]:
    """Every ``*.json`` of ``folder`` (sorted by name), each checked to be a transaction Bundle."""
    if not folder.is_dir():
        raise LoadError(f"{folder} is not a folder; pass --dir with the folder of patient transaction Bundles.")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise LoadError(f"No *.json files in {folder}; pass --dir with the folder of patient transaction Bundles.")
    bundles = []
    for path in files:
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LoadError(f"{path.name} is not readable JSON ({exc}); fix or remove the file.") from None
        problem = transaction_problem(bundle)
        if problem:
            raise LoadError(f"{path.name} is not a FHIR transaction Bundle: {problem}; fix or remove the file.")
        bundles.append((path, bundle))
    return bundles


def transaction_problem(bundle: object) -> str | None:
    """Why ``bundle`` cannot be POSTed as a transaction, or None."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return "resourceType is not Bundle"
    if bundle.get("type") != "transaction":
        return f"type is {bundle.get('type')!r}, not 'transaction'"
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        return "it has no entries"
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return f"entry[{index}] has no resource"
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            return f"entry[{index}] has no request.method and request.url"
    return None


def wait_for_server(session: requests.Session, base: str, wait_s: float, interval_s: float,
                    out: TextIO, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Poll ``GET [base]/metadata`` until it is an R4 CapabilityStatement, for at most ``wait_s``."""
    url = f"{base}/metadata"
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        remaining = max(1.0, wait_s - (clock() - started))
        problem = probe(session, url, min(PROBE_TIMEOUT_S, remaining))
        elapsed = clock() - started
        if problem is None:
            print(f"FHIR server ready at {base} (attempt {attempt}, {elapsed:.0f} s)", file=out, flush=True)
            return
        if elapsed + interval_s > wait_s:
            raise LoadError(
                f"The FHIR server at {url} was not ready after {elapsed:.0f} s and {attempt} attempt(s) "
                f"(last: {problem}). Check that it is running (docker compose logs hapi) and that "
                "--fhir-base is its base URL, or wait longer with --wait.")
        print(f"waiting for the FHIR server at {url}: attempt {attempt}, {elapsed:.0f} of {wait_s:.0f} s "
              f"({problem})", file=out, flush=True)
        sleep(interval_s)


def probe(session: requests.Session, url: str, timeout_s: float) -> str | None:
    """None when ``url`` answers an R4 CapabilityStatement, else why not (retried by the caller).

    A server that is up but speaks another FHIR version will not change its mind: that is a
    :class:`LoadError` at once.
    """
    try:
        response = session.get(url, headers={"Accept": FHIR_JSON},
                               timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s))
    except requests.Timeout:
        return f"no answer within {timeout_s:.0f} s"
    except requests.ConnectionError:
        return "connection refused or host not found yet"
    except requests.RequestException as exc:
        return type(exc).__name__
    with response:
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        try:
            body = response.json()
        except ValueError:
            return "the answer is not JSON"
    if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
        return "the answer is not a CapabilityStatement"
    version = str(body.get("fhirVersion") or "")
    if not version.startswith("4.0"):
        raise LoadError(f"The FHIR server at {url} speaks FHIR {version or '(version not stated)'}, not R4 "
                        "(4.0.x), and the patient bundles are R4: start it as R4 (HAPI: hapi.fhir.fhir_version=R4).")
    return None


def load_bundle(session: requests.Session, base: str, name: str, bundle: dict, timeout_s: float) -> BundleResult:
    """POST one transaction, unless its Patient is already on the server."""
    existing = find_patient(session, base, name, bundle, timeout_s)
    if existing:
        return BundleResult(name, existing, skipped=True)
    answer = fhir_call(session, "POST", base, name, timeout_s, data=json.dumps(bundle).encode("utf-8"),
                       headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    return summarise(name, bundle, answer)


def patient_identifier(bundle: dict) -> str | None:
    """``system|value`` of the bundle's Patient's first full identifier, for a search."""
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    for identifier in (patients[0].get("identifier") or []) if patients else []:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            return f"{identifier['system']}|{identifier['value']}"
    return None


def find_patient(session: requests.Session, base: str, name: str, bundle: dict, timeout_s: float) -> str | None:
    """``Patient/<id>`` when a Patient with the bundle's Patient identifier already exists."""
    identifier = patient_identifier(bundle)
    if identifier is None:
        return None
    answer = fhir_call(session, "GET", f"{base}/Patient", name, timeout_s,
                       params={"identifier": identifier}, headers={"Accept": FHIR_JSON})
    for entry in answer.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient" and resource.get("id"):
            return f"Patient/{resource['id']}"
    return None


def fhir_call(session: requests.Session, method: str, url: str, name: str, timeout_s: float, **kwargs) -> dict:
    """One request for bundle ``name``; a JSON object back, or :class:`LoadError` saying what to do."""
    what = f"{method} {url} for {name}"
    try:
        response = session.request(method, url, timeout=(CONNECT_TIMEOUT_S, timeout_s), **kwargs)
    except requests.Timeout:
        raise LoadError(f"{what}: no answer within {timeout_s:.0f} s; retry, or allow longer with --timeout.") from None
    except requests.RequestException as exc:
        raise LoadError(f"{what} failed ({type(exc).__name__}); check that the FHIR server is still up and retry.") from None
    with response:
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
    if not 200 <= status < 300:
        raise LoadError(f"{what}: the server answered HTTP {status}{diagnostics(body)}. Fix the bundle, "
                        "or the server's settings (HAPI must accept transactions), then run the loader again.")
    if not isinstance(body, dict):
        raise LoadError(f"{what}: the answer is not a JSON resource; check that --fhir-base is a FHIR base URL.")
    return body


def diagnostics(body: object) -> str:
    """The OperationOutcome's messages, shortened, for an error line."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
             for i in body.get("issue") or [] if isinstance(i, dict)]
    text = "; ".join(t for t in texts if t)
    return f": {text[:400]}" if text else ""


def summarise(name: str, bundle: dict, answer: dict) -> BundleResult:
    """Count what the transaction-response says each entry did (entries answer in order)."""
    if answer.get("resourceType") != "Bundle" or answer.get("type") != "transaction-response":
        raise LoadError(f"{name}: the server did not answer with a transaction-response Bundle; "
                        "check that --fhir-base is the FHIR base URL (transactions are POSTed to the base).")
    result = BundleResult(name, None)
    for sent, got in zip(bundle["entry"], answer.get("entry") or []):
        rtype = sent["resource"]["resourceType"]
        response = (got.get("response") if isinstance(got, dict) else None) or {}
        status, location = str(response.get("status") or ""), str(response.get("location") or "")
        if status.startswith(("200", "201")):
            (result.created if status.startswith("201") else result.updated)[rtype] += 1
        if rtype == "Patient" and location.startswith("Patient/"):
            result.patient = "/".join(location.split("/")[:2])
    return result


def describe(result: BundleResult) -> str:
    """One line per bundle, for the log."""
    if result.skipped:
        return (f"{result.name}: already on the server -> patientId {result.patient.split('/', 1)[1]}; skipped "
                "(delete that Patient on the server to load the bundle again)")
    parts = [f"created {sum(result.created.values())} ({_counts(result.created)})"]
    if result.updated:
        parts.append(f"updated {sum(result.updated.values())} ({_counts(result.updated)})")
    patient = f" -> patientId {result.patient.split('/', 1)[1]}" if result.patient else ""
    return f"{result.name}: {', '.join(parts)}{patient}"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{rtype} {n}" for rtype, n in sorted(counter.items()))
