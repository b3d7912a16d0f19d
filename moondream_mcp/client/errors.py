"""Every way a Moondream API call can fail, as one tree.

    MoondreamError                      base of everything below
    ├── NotConfiguredError              no API key for the cloud endpoint
    ├── InvalidRequestError             an argument cannot be sent as given (refused before sending)
    ├── UnexpectedResponseError         the API answered in a shape the client does not understand
    ├── APIConnectionError              the request never got an HTTP answer
    │   └── APITimeoutError             ... because it took too long
    ├── StreamError                     a streamed answer ended before it completed
    └── APIStatusError                  the API answered with an error
        ├── BadRequestError             400: the request was refused as invalid
        ├── AuthenticationError         401: missing or wrong key
        ├── NotFoundError               404: unknown finetune or checkpoint
        ├── ConflictError               409: a finetune name exists with another rank
        ├── GoneError                   410: the checkpoint was deleted
        ├── PayloadTooLargeError        413: image or file too large
        ├── RateLimitError              429: too many requests
        └── ServerError                 5xx and Cloudflare 52x

Moondream Station reports failures of its skill endpoints as HTTP 200 with ``{"error": ...}``; those
become ``APIStatusError`` with the status they came with, so callers see one shape of failure. Only there:
elsewhere a 200 carrying ``error`` is a result (a failed batch job).
"""

from __future__ import annotations

import json

import httpx2


class MoondreamError(Exception):
    """Base of every error raised by the client. ``str(error)`` never contains the API key."""


class NotConfiguredError(MoondreamError):
    """The client cannot make a request as configured (e.g. no key for the cloud)."""


class InvalidRequestError(MoondreamError):
    """An argument cannot be sent as given (e.g. an id that is not a path segment); nothing was sent."""


class UnexpectedResponseError(MoondreamError):
    """The API answered successfully, but not in the documented shape."""


class APIConnectionError(MoondreamError):
    """No HTTP response arrived: refused, reset, DNS failure, or timeout."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        # False only when the request certainly never reached the server (connect failed);
        # non-idempotent calls may be retried only then.
        self.sent = sent


class APITimeoutError(APIConnectionError):
    """The API did not answer in time; the request may still have been processed."""


class StreamError(MoondreamError):
    """A streamed response ended without its completing event."""


class APIStatusError(MoondreamError):
    """The API answered with an error status (or a Station-style error body)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class GoneError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class ServerError(APIStatusError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
}

# Statuses after which the same request may simply be sent again.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})

_MAX_MESSAGE = 300


def printable(text: object, limit: int = _MAX_MESSAGE) -> str:
    """Text from the API as it may reach a model: control and format characters (newlines, escapes, bidi
    overrides) become spaces, so a server's words cannot forge lines or hide text; the length is capped."""
    cleaned = "".join(c if c.isprintable() else " " for c in str(text)[: limit * 2])
    return " ".join(cleaned.split())[:limit]


def error_message(body: object, fallback: str) -> tuple[str, str | None]:
    """The message and code from any of the three error body shapes: nested, flat, plain text."""
    if isinstance(body, dict) and "error" in body:
        err = body["error"]
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)
            code = err.get("code") or err.get("type")
            return printable(message) or fallback, (printable(code, 100) if code is not None else None)
        if err not in (None, ""):
            return printable(err) or fallback, None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return printable(body["detail"]) or fallback, None
    if isinstance(body, str) and body.strip():
        return printable(body) or fallback, None
    return fallback, None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are rare here and ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)


def status_error(response: httpx2.Response, body: object | None = None) -> APIStatusError:
    """The error for an HTTP error response (or a 200 whose JSON body carries ``error``)."""
    if body is None:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = response.text
    status = response.status_code
    reason = f"HTTP {status}"
    message, code = error_message(body, reason)
    request_id = body.get("request_id") if isinstance(body, dict) else None
    if status >= 500:
        cls: type[APIStatusError] = ServerError
    else:
        cls = _BY_STATUS.get(status, APIStatusError)
    return cls(
        message,
        status_code=status,
        code=code,
        request_id=request_id if isinstance(request_id, str) else None,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )
