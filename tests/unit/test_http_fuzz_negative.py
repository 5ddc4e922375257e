"""Malformed requests generated from ``/openapi.json`` (schemathesis' negative mode:
wrong types, missing fields, values out of their schema) never get a 5xx: bad
input is a 4xx with a message, whatever shape it takes."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from test_http_openapi import LOCAL, build_app

APP = build_app()
# Only requests that can be malformed are fuzzed: a route without a JSON body (GET and
# HEAD routes, a blob's raw bytes, a delete by any name) has no malformed form.
schema = (
    schemathesis.openapi.from_wsgi("/openapi.json", APP)
    .include(method=["POST", "DELETE"])
    .exclude(path="/api/push")  # 501 by design
    .exclude(path="/api/blobs/{digest}")
    .exclude(method="DELETE", path="/rustllm/api/models/{name}")
    .exclude(method="DELETE", path="/v1/responses/{response_id}")
)
schema.config.generation.update(modes=[GenerationMode.NEGATIVE])


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(
    max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_malformed_requests_never_get_a_server_error(case) -> None:
    case.call_and_validate(headers=LOCAL, checks=[not_a_server_error])
