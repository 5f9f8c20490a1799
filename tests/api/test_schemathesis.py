"""A property-based fuzz run of /openapi.json: schemathesis generates requests (valid and
invalid) for every operation and checks that no answer is a 5xx and every answer matches the
document: its status, content type, headers and body schema. Bounded in time by a small
``max_examples`` per operation."""

from __future__ import annotations

import schemathesis
from api_support import build_app
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.backends.base import WorkerInfo
from conveyor.web import create_app

app = build_app("memory://")
app.enqueue("add", [1])  # something to list
# a live scheduler, so /health/scheduler answers 200 as documented rather than its 503
app.backend.heartbeat_worker(WorkerInfo(id="fuzz-scheduler", host="test", pid=1,
                                        kind="scheduler", last_heartbeat=app.clock()),
                             ttl=3600)
api = create_app(app, tokens=["fuzz-token"], read_only_tokens=[], heartbeat=0.2)
AUTH = {"Authorization": "Bearer fuzz-token"}
schema = schemathesis.openapi.from_asgi("/openapi.json", api, headers=AUTH)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_response_matches_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)
