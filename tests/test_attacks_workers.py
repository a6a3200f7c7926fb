"""State that must hold across the workers of ``spine-cds serve`` (issue #14, findings 7 and 11),
each reproduced against a real two-worker server.

Every call here opens a new connection (urllib, no keep-alive), so the kernel spreads calls over
both workers' SO_REUSEPORT sockets; a test that needs both workers to have answered keeps
calling until they have, and says so if they never did.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from fhir_stub import FhirStub, resources_in, without_prefetch
from served import post, served  # noqa: F401 (served: a fixture the tests take by name)
from test_shutdown import SELECT, sample

TOKEN = "ehr-token-finding-7"
MAX_CALLS = 40   # enough for two workers to both answer, by any reasonable spread


def test_a_repeated_order_select_reads_the_fhir_server_once_whichever_worker_answers(served):
    """Finding 7: the patient-data cache lived in each worker, so a repeated order-select made 0
    FHIR calls only when it landed on the worker that had read the record (4 of 6 went back to
    the FHIR server).  Now the default cache is on disk, shared by the host's workers."""
    body = sample()
    with FhirStub(token=TOKEN) as fhir:
        fhir.add(*resources_in(body["prefetch"]))
        app = served(workers=2, SPINE_CDS_ALLOWED_FHIR_SERVERS=fhir.url)
        app.booted(2)
        call = without_prefetch(body, fhir.url, TOKEN)
        pids, rounds = set(), []
        for n in range(MAX_CALLS):
            instance = f"00000000-0000-4000-8007-{n:012d}"
            status, _, answer = post(app.url + SELECT, call | {"hookInstance": instance})
            assert status == 200 and answer["cards"], answer
            pids.add(app.pid_of(instance))
            rounds.append(len(fhir.requests))
            if n >= 5 and len(pids) == 2:
                break
        assert len(pids) == 2, "every call landed on one worker: the test proves nothing"
        first_round = rounds[0]
        assert first_round > 0
        assert len(fhir.requests) == first_round, (
            f"{len(rounds)} order-selects made {len(fhir.requests)} FHIR requests, one round is {first_round}: "
            f"requests after each call {rounds}")
