"""What went wrong, in a sentence for the model: the failures the server expects, their messages, and
failures grouped by reason for work over many items. Knows nothing of MCP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .client import (
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
from .files import FileError
from .images import ImageError
from .shapes import PathError


class InputError(ValueError):
    """Arguments that cannot work together, said in a sentence the model can act on."""


# What a bad input or the API can cause; anything else is a bug and propagates.
EXPECTED: tuple[type[Exception], ...] = (MoondreamError, ImageError, FileError, PathError, InputError)

Explain = Callable[[Exception], str]

EXAMPLES_PER_REASON = 5


def _explain(exc: Exception, endpoint: str) -> str:
    if isinstance(
        exc,
        (
            ImageError,
            FileError,
            InputError,
            NotConfiguredError,
            PathError,
            InvalidRequestError,
            UnexpectedResponseError,
        ),
    ):
        return str(exc)
    if isinstance(exc, AuthenticationError):
        return (
            f"the Moondream API refused the API key (HTTP {exc.status_code}): {exc.message}. Check MOONDREAM_API_KEY."
        )
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


def describe(exc: Exception, *, endpoint: str, secret: str | None) -> str:
    """A short message for the model; the API key is scrubbed from it."""
    message = _explain(exc, endpoint)
    return message.replace(secret, "***") if secret else message


@dataclass(frozen=True)
class Explainer:
    """describe() bound to one server's endpoint and key: what domain code is handed as `explain`."""

    endpoint: str
    secret: str | None

    def __call__(self, exc: Exception) -> str:
        return describe(exc, endpoint=self.endpoint, secret=self.secret)


@dataclass
class FailureGroups:
    """Failures counted by reason, with a few examples of each, most common first when listed."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_PER_REASON:
            kept.append(example)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def grouped(self) -> list[tuple[str, int, list[str]]]:
        """(reason, count, examples) for each reason, most common first."""
        return [(reason, count, self.examples[reason]) for reason, count in self.counts.most_common()]
