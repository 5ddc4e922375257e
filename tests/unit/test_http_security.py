"""CORS, the Host check against DNS rebinding, and the optional API key."""

from __future__ import annotations

import attrs
import falcon.testing
import pytest

from modelport.entrypoints.http.app import create_app
from modelport.entrypoints.http.security import host_allowed, is_loopback, origin_allowed, origin_patterns

LOCAL = {"Host": "localhost"}


def client_with(services, settings, headers=LOCAL, **changes) -> falcon.testing.TestClient:
    app = create_app(services, attrs.evolve(settings, **changes), hostname="mybox")
    return falcon.testing.TestClient(app, headers=headers)


@pytest.fixture
def client(services, settings) -> falcon.testing.TestClient:
    return client_with(services, settings)


# -- CORS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:3000",
        "https://127.0.0.1:8080",
        "http://0.0.0.0:1",
        "app://x",
        "tauri://localhost",
        "vscode-webview://abc",
        "file://",
    ],
)
def test_local_origins_are_allowed_by_default(origin) -> None:
    assert origin_allowed(origin, origin_patterns())


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "chrome-extension://abc", "http://127.0.0.2"]
)
def test_other_origins_are_not(origin) -> None:
    assert not origin_allowed(origin, origin_patterns())


def test_extra_origins_and_the_wildcard() -> None:
    patterns = origin_patterns("https://app.example, chrome-extension://*")
    assert origin_allowed("https://app.example", patterns)
    assert origin_allowed("chrome-extension://abcdef", patterns)
    assert not origin_allowed("https://other.example", patterns)
    assert origin_allowed("https://anything.example", origin_patterns("*"))


def test_a_preflight_is_answered_with_the_allowed_headers(client) -> None:
    result = client.simulate_options(
        "/v1/chat/completions",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type, X-Stainless-OS, X-Evil",
        },
    )
    assert result.status_code == 204
    assert result.headers["access-control-allow-origin"] == "http://localhost:5173"
    allowed = {h.strip() for h in result.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os", "openai-beta"} <= allowed
    assert "x-evil" not in allowed
    assert "POST" in result.headers["access-control-allow-methods"]


def test_an_allowed_origin_gets_cors_headers_on_answers_and_errors(client) -> None:
    ok = client.simulate_get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    missing = client.simulate_post("/api/show", json={"model": "nope"}, headers={"Origin": "http://localhost"})
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == "http://localhost"


def test_a_foreign_origin_is_403(client) -> None:
    result = client.simulate_get("/api/tags", headers={"Origin": "https://evil.example"})
    assert result.status_code == 403 and "MODELPORT_ORIGINS" in result.json["error"]
    assert "access-control-allow-origin" not in result.headers


def test_configured_origins_are_allowed(services, settings) -> None:
    client = client_with(services, settings, origins="https://app.example")
    result = client.simulate_get("/api/tags", headers={"Origin": "https://app.example"})
    assert result.status_code == 200 and result.headers["access-control-allow-origin"] == "https://app.example"


# -- Host check ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
        "192.168.0.4",
        "0.0.0.0",
        "mybox",
        "MyBox",
        "app.localhost",
        "printer.local",
        "db.internal",
    ],
)
def test_local_hosts_are_allowed(host) -> None:
    assert host_allowed(host, "mybox")


@pytest.mark.parametrize("host", ["evil.example", "8.8.8.8", "localhost.evil.example", "mybox.example"])
def test_public_hosts_are_not(host) -> None:
    assert not host_allowed(host, "mybox")


def test_a_rebound_name_is_refused_while_bound_to_loopback(services, settings) -> None:
    client = client_with(services, settings, headers={"Host": "attacker.example:11434"})
    result = client.simulate_get("/api/tags")
    assert result.status_code == 403 and "attacker.example" in result.json["error"]
    assert client.simulate_get("/api/tags", headers={"Host": "127.0.0.1:11434"}).status_code == 200


def test_any_host_is_served_when_bound_to_all_interfaces(services, settings) -> None:
    client = client_with(services, settings, headers={"Host": "models.example.com"}, host="0.0.0.0")
    assert client.simulate_get("/api/tags").status_code == 200


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.2", False),
        ("example.com", False),
    ],
)
def test_loopback_binds(host, loopback) -> None:
    assert is_loopback(host) is loopback


# -- API key -------------------------------------------------------------------------------------


@pytest.fixture
def keyed(services, settings) -> falcon.testing.TestClient:
    return client_with(services, settings, api_key="s3cret")


@pytest.mark.parametrize("path", ["/", "/api/tags", "/api/version", "/v1/models", "/metrics", "/openapi.json"])
def test_every_route_needs_the_key(keyed, path) -> None:
    result = keyed.simulate_get(path)
    assert result.status_code == 401 and "API key" in str(result.json["error"])
    assert result.headers["www-authenticate"].startswith("Bearer")
    assert keyed.simulate_get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.mark.parametrize("authorization", ["Bearer wrong", "s3cret", "Basic s3cret", "Bearer ", "Bearer s3cret2"])
def test_a_wrong_key_is_401(keyed, authorization) -> None:
    assert keyed.simulate_get("/api/tags", headers={"Authorization": authorization}).status_code == 401


def test_health_needs_no_key(keyed) -> None:
    assert keyed.simulate_get("/health").status_code == 200


def test_the_openai_routes_answer_401_in_their_shape(keyed) -> None:
    result = keyed.simulate_post("/v1/chat/completions", json={"model": "fake", "messages": []})
    assert result.status_code == 401
    assert result.json["error"]["type"] == "authentication_error"
    assert result.headers["x-should-retry"] == "false"


def test_a_preflight_needs_no_key(keyed) -> None:
    result = keyed.simulate_options(
        "/api/chat", headers={"Origin": "http://localhost", "Access-Control-Request-Method": "POST"}
    )
    assert result.status_code == 204


def test_without_a_key_configured_none_is_needed(client) -> None:
    assert client.simulate_get("/api/tags").status_code == 200


def test_settings_never_print_the_key(settings) -> None:
    described = dict((name, value) for name, value, _ in attrs.evolve(settings, api_key="s3cret").describe())
    assert described["api_key"] == "(set)"
    assert "s3cret" not in repr(attrs.evolve(settings, api_key="s3cret"))
