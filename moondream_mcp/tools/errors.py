"""Client and image failures turned into short ToolErrors the model can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError

from ..client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InvalidRequestError,
    MoondreamError,
    NotConfiguredError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    StreamError,
    UnexpectedResponseError,
)
from ..images import ImageError
from ..shapes import PathError


def _explain(exc: Exception, endpoint: str) -> str:
    if isinstance(exc, (ImageError, NotConfiguredError, PathError, InvalidRequestError, UnexpectedResponseError)):
        return str(exc)
    if isinstance(exc, AuthenticationError):
        return (f"the Moondream API refused the API key (HTTP {exc.status_code}): {exc.message}. "
                "Check MOONDREAM_API_KEY.")
    if isinstance(exc, RateLimitError):
        return "the Moondream API is rate limiting this key (HTTP 429) even after retries; wait a little and try again."
    if isinstance(exc, PayloadTooLargeError):
        return f"the Moondream API says the request is too large (HTTP 413): {exc.message}"
    if isinstance(exc, BadRequestError):
        return f"the Moondream API refused the request (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, NotFoundError):
        return f"not found (HTTP 404): {exc.message}"
    if isinstance(exc, ServerError):
        return f"the Moondream API failed (HTTP {exc.status_code}) even after retries: {exc.message}"
    if isinstance(exc, APIStatusError):
        return f"the Moondream API answered with an error (HTTP {exc.status_code}): {exc.message}"
    if isinstance(exc, APITimeoutError):
        return f"the Moondream API at {endpoint} did not answer in time; try again, or raise MOONDREAM_TIMEOUT."
    if isinstance(exc, APIConnectionError):
        return f"could not reach the Moondream API at {endpoint}: {exc}. Is MOONDREAM_ENDPOINT right?"
    if isinstance(exc, StreamError):
        return f"the Moondream API's answer broke off: {exc}"
    return str(exc)


EXPECTED = (MoondreamError, ImageError, PathError)


def describe(exc: Exception, *, endpoint: str, secret: str | None) -> str:
    """A short message for the model; the API key is scrubbed from it."""
    message = _explain(exc, endpoint)
    return message.replace(secret, "***") if secret else message


@contextmanager
def tool_errors(*, endpoint: str, secret: str | None) -> Iterator[None]:
    """Re-raise expected failures as ToolError with a message from describe()."""
    try:
        yield
    except EXPECTED as exc:
        raise ToolError(describe(exc, endpoint=endpoint, secret=secret)) from None
