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
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP).exclude(path="/api/push")  # 501 by design
schema.config.generation.update(modes=[GenerationMode.NEGATIVE])


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_malformed_requests_never_get_a_server_error(case) -> None:
    case.call_and_validate(headers=LOCAL, checks=[not_a_server_error])
