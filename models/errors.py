"""Domain errors raised by model and media code.

They carry a stable ``error_type`` and the request parameter at fault; the gateway maps each
class to an HTTP status in exactly one place (``deployments/gateway/errors.py``).

Messages and params are made encodable as UTF-8 when the error is built (a lone surrogate such as
``"\\ud800"`` becomes the six characters ``\\ud800``): a message often quotes the caller's input,
and a Ray worker that cannot encode an exception's text dies instead of returning it (issue 22: one
``language`` of ``"\\ud800"`` killed every AudioModel replica it reached).
"""

from __future__ import annotations


class MMServeError(Exception):
    """Base class: a problem the caller can act on, with the request field it concerns."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        message = safe_text(message)
        super().__init__(message)
        self.message = message
        self.param = None if param is None else safe_text(param)

    def __reduce__(self):
        """Keep keyword-only ``param`` across Ray's pickling; other attributes a subclass sets
        (e.g. ``retry_after``) travel as the instance state."""
        return (_rebuild, (type(self), self.message, self.param), self.__dict__)


def safe_text(text: object) -> str:
    """``text`` as a string that encodes as UTF-8: what cannot (lone surrogates) is backslash-escaped."""
    text = str(text)
    if text.isascii():  # O(1) for str: nearly every message
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _rebuild(cls: type[MMServeError], message: str, param: str | None) -> MMServeError:
    return cls(message, param=param)


class InvalidInput(MMServeError):
    """The request is well-formed HTTP but its content is unusable (bad base64, empty list...)."""


class UnsupportedMedia(MMServeError):
    """Media bytes that no decoder understands, or a content type the route does not take."""

    error_type = "unsupported_media_type"


class PayloadTooLarge(MMServeError):
    """Media over a configured limit (pixels, seconds, bytes)."""

    error_type = "payload_too_large"


class NotFound(MMServeError):
    """A named model, route or resource does not exist."""

    error_type = "not_found_error"


class Incompatible(MMServeError):
    """The request combines things that cannot work together (e.g. two embedding spaces)."""

    error_type = "incompatible_request"


class Unavailable(MMServeError):
    """A capability exists in the API but is not configured or not ready in this deployment."""

    error_type = "service_unavailable"


class Overloaded(Unavailable):
    """At capacity: a bounded queue or in-flight budget is full, or a replica was lost; Retry-After
    says when to come back."""

    error_type = "overloaded"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class DeadlineExceeded(MMServeError):
    """The request's deadline (the server's request_timeout_s, or a shorter X-Request-Timeout) passed
    before its work finished; that work was cancelled."""

    error_type = "deadline_exceeded"


class Unauthorized(MMServeError):
    """No API key, or one that no tenant holds."""

    error_type = "authentication_error"


class Forbidden(MMServeError):
    """A valid key whose tenant is disabled or may not use what it asked for."""

    error_type = "permission_error"


class Throttled(MMServeError):
    """Over the tenant's rate or concurrency limit; Retry-After says when to come back."""

    error_type = "rate_limit_error"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: float = 1.0, reason: str = "tenant_rate"
    ) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after
        self.reason = reason  # which limit: tenant_rate, tenant_concurrency, auth (failed logins), queue_full


class RequestTimeout(MMServeError):
    """The request (its body, or its work) did not complete within its time limit."""

    error_type = "timeout_error"


class PoisonRequest(MMServeError):
    """A poison request: two model replicas died with this input in flight, so it is refused.

    It is not sent again while quarantined (``gateway.settings.poison_quarantine_s``)."""

    error_type = "poison_request"
