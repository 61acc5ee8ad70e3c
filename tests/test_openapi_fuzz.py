"""Every HTTP route of the real app, fuzzed by schemathesis from its own ``/openapi.json``: data that
fits the schema and data that does not, sent with an admin and a lead token. No answer is a 5xx.

Runs against a real server on SQLite and on the local PostgreSQL (which refuses NUL characters
that SQLite keeps, so a route that passes them to the database 500s only there). Examples per
operation, mode and role: 8 in CI (``HYPOTHESIS_PROFILE=ci``), 200 with ``long``; the number of
requests sent and the statuses they got are printed."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, note
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

LONG = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "long"
PER_OPERATION = hsettings(max_examples=200 if LONG else 8, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
ROLES = ("admin", "lead")
SUMMARY: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _report_requests(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in SUMMARY:
            print(line)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_http_route_answers_5xx_to_schema_fuzzing(server_factory, request, backend):
    over = {"database_url": request.getfixturevalue("pg_url")} if backend == "postgres" else {}
    server = server_factory(tier1_backend="off", phase=3, **over)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    session = requests.Session()
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 20, "the schema lost its routes"
    took_op: Counter[str] = Counter()
    for op in operations:
        t_op = time.monotonic()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for role in ROLES:
                auth = {"Authorization": f"Bearer {server.tokens[role]}"}

                @PER_OPERATION
                @given(case=op.as_strategy(generation_mode=mode))
                def fuzz(case):
                    try:
                        resp = case.call(base_url=server.url, session=session, headers=auth, timeout=30)
                    except requests.exceptions.InvalidURL:  # the client refuses to send it: not our server
                        return
                    sent[op.label] += 1
                    statuses[resp.status_code] += 1
                    note(case.as_curl_command(headers=auth))
                    if resp.status_code >= 500:
                        failures.append(f"{role} {mode.value}: {case.as_curl_command()} -> "
                                        f"{resp.status_code} {resp.text[:300]}")
                        print("\n5xx:", failures[-1])
                    assert resp.status_code < 500, (resp.status_code, resp.text[:500])

                try:
                    fuzz()
                except (AssertionError, ExceptionGroup):
                    pass  # collected in failures; keep fuzzing the other routes
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no parameters or body)
        took_op[op.label] = round(time.monotonic() - t_op, 1)
    took = time.monotonic() - t0
    print("\nslowest operations (s):", took_op.most_common(6))
    SUMMARY.append(f"\nschemathesis ({backend}): {sum(sent.values())} requests over {len(operations)} operations in "
                   f"{took:.1f} s; statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n".join(dict.fromkeys(failures))
    assert server.get("/healthz").status_code == 200
