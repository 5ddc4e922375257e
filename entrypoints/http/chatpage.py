"""``/``: a chat page for browsers (``static/chat.html``: plain HTML and JavaScript,
nothing fetched from elsewhere), and Ollama's "Ollama is running" for every client
that does not ask for HTML.

The page talks to the OpenAI-compatible routes (``/v1/models``,
``/v1/chat/completions`` streamed), which both API profiles serve; it asks for the
API key when the server answers 401 and sends it as a bearer token. The page itself
holds no data, so it loads without the key (``security.ApiKey`` lets it through).
"""

from __future__ import annotations

import functools
from importlib import resources as package_files

import falcon

PROBE_ANSWER = "Ollama is running"


def wants_html(req: falcon.Request) -> bool:
    """A browser navigating here (``Accept: text/html,...``), not an API client."""
    return req.method in ("GET", "HEAD") and "text/html" in (req.get_header("Accept") or "")


@functools.lru_cache(maxsize=1)
def page() -> bytes:
    return package_files.files(__package__).joinpath("static", "chat.html").read_bytes()


class Root:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if wants_html(req):
            resp.content_type = "text/html; charset=utf-8"
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header(
                "Content-Security-Policy",
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'",
            )
            resp.set_header("X-Content-Type-Options", "nosniff")
            resp.data = page()
            return
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = PROBE_ANSWER

    on_head = on_get
