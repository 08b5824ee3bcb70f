"""The request id every answer carries (``X-Request-ID``), and what a client may send as one.

Ray Serve 2.60's proxy gives each HTTP request an id (``http_util.RequestIdMiddleware``): the
client's ``X-Request-ID`` as sent, unchecked, else a new one. It echoes it on every answer, and the
request context carries it into every replica a handle call reaches, where Serve's log records
(``ServeContextFilter``) and access lines show it. This module bounds what a client may send:
an id that is too long or outside a small alphabet is dropped before Serve sees it, so Serve
assigns a new one and nothing hostile reaches headers or logs. It must stay importable in the
proxy (``proxy_errors`` uses it): no heavy imports at module level.
"""

from __future__ import annotations

import re

HEADER = b"x-request-id"
MAX_LENGTH = 128
_WELL_FORMED = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")


def well_formed(value: bytes) -> bool:
    """Whether a client-sent id may be kept: 1 to 128 characters of ``[A-Za-z0-9._:-]``."""
    return _WELL_FORMED.fullmatch(value.decode("latin-1")) is not None


def keep_well_formed(headers: list) -> list:
    """The request's headers with at most one ``X-Request-ID``: the client's first, if well formed."""
    kept: list = []
    seen = False
    for key, value in headers:
        if bytes(key).lower() == HEADER:
            if seen or not well_formed(bytes(value)):
                continue
            seen = True
        kept.append((key, value))
    return kept


def current() -> str | None:
    """The id of the request this code works for (Serve's request context), if any."""
    from ray import serve

    return serve.context._get_serve_request_context().request_id or None


def batch_ids() -> list[str]:
    """The ids of the requests in the ``@serve.batch`` call running now (Serve's batch context)."""
    from ray import serve

    return [ctx.request_id for ctx in serve.context._get_serve_batch_request_context() if ctx.request_id]
