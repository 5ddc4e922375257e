"""What a browser page, a rebinding DNS name or a stranger may do with the API.

- CORS: pages from local origins (and those listed in ``MODELPORT_ORIGINS``) may
  call the API; preflight ``OPTIONS`` requests are answered here. A request from
  any other origin is refused with 403.
- Host check: while the server listens on a loopback address, a request whose
  ``Host`` is not a local name is refused with 403, so that a web page cannot
  reach the API through a DNS name rebound to 127.0.0.1.
- API key: with ``MODELPORT_API_KEY`` set, every route but ``/health`` (and CORS
  preflights, which browsers send without credentials) needs
  ``Authorization: Bearer <key>``; otherwise 401.
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
import socket
from typing import Iterable

import falcon

# Ollama's defaults: local web origins and the schemes of local app shells.
DEFAULT_ORIGINS = tuple(
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")
    for scheme in ("http", "https")
    for port in ("", ":*")
) + ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")

ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "user-agent",
    "x-requested-with",
    "openai-beta",
    "openai-organization",
    "openai-project",
)
ALLOWED_HEADER_PREFIXES = ("x-stainless-",)
EXPOSED_HEADERS = "Retry-After, X-Should-Retry"
PREFLIGHT_MAX_AGE_S = 12 * 3600
PUBLIC_PATHS = frozenset({"/health"})
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def origin_patterns(extra: str | Iterable[str] = "") -> tuple[str, ...]:
    """The defaults plus ``extra`` (a comma-separated string or a list)."""
    items = extra.split(",") if isinstance(extra, str) else list(extra)
    return DEFAULT_ORIGINS + tuple(item.strip() for item in items if item.strip())


def origin_allowed(origin: str, patterns: Iterable[str]) -> bool:
    """``*`` in a pattern matches any run of characters (``http://localhost:*``)."""
    return any(pattern == "*" or fnmatch.fnmatchcase(origin, pattern) for pattern in patterns)


class Cors:
    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(patterns)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        origin = req.get_header("Origin")
        if origin is None:
            return  # not a browser's cross-origin request
        if not origin_allowed(origin, self._patterns):
            raise falcon.HTTPForbidden(description=f"origin '{origin}' is not allowed; add it to MODELPORT_ORIGINS")
        resp.set_header("Access-Control-Allow-Origin", origin)
        resp.set_header("Vary", "Origin")
        resp.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
        if req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method"):
            self._preflight(req, resp)

    @staticmethod
    def _preflight(req: falcon.Request, resp: falcon.Response) -> None:
        asked = req.get_header("Access-Control-Request-Headers") or ""
        names = [name.strip().lower() for name in asked.split(",") if name.strip()]
        allowed = [n for n in names if n in ALLOWED_HEADERS or n.startswith(ALLOWED_HEADER_PREFIXES)]
        resp.set_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
        resp.set_header("Access-Control-Allow-Headers", ", ".join(dict.fromkeys([*ALLOWED_HEADERS, *allowed])))
        resp.set_header("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_S))
        resp.status = falcon.HTTP_204
        resp.complete = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, hostname: str | None = None) -> bool:
    """Local names and addresses: loopback, private or unspecified IPs, this
    machine's name, ``localhost`` and names under .localhost, .local, .internal."""
    host = host.lower().rstrip(".")
    if not host or host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return True
    if hostname and host == hostname.lower():
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


class HostCheck:
    """Refuses foreign ``Host`` headers (used only when bound to loopback)."""

    def __init__(self, hostname: str | None = None) -> None:
        self._hostname = hostname if hostname is not None else socket.gethostname()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not host_allowed(req.host, self._hostname):
            raise falcon.HTTPForbidden(
                description=f"host '{req.host}' is not allowed: this server only answers local names"
            )


class ApiKey:
    """Requires ``Authorization: Bearer <key>`` (compared in constant time)."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PUBLIC_PATHS or (req.method == "OPTIONS" and req.get_header("Origin")):
            return
        if req.path == "/" and req.method in ("GET", "HEAD") and "text/html" in (req.get_header("Accept") or ""):
            return  # the chat page holds no data; it asks for the key itself (chatpage.py)
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            raise falcon.HTTPUnauthorized(
                description="a valid API key is required: send 'Authorization: Bearer <key>'",
                challenges=['Bearer realm="modelport"'],
            )


def middleware(*, bind_host: str, origins: str, api_key: str, hostname: str | None = None) -> list[object]:
    """The security middleware for a server bound to ``bind_host``, in order."""
    chain: list[object] = [Cors(origin_patterns(origins))]
    if is_loopback(bind_host):
        chain.append(HostCheck(hostname))
    if api_key:
        chain.append(ApiKey(api_key))
    return chain
