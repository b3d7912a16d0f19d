"""What went wrong, in a sentence for the model: the failures the server expects, their messages, and
failures grouped by reason for work over many items. Knows nothing of MCP."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
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
from .store import Refused


class InputError(ValueError):
    """Arguments that cannot work together, said in a sentence the model can act on."""


# What a bad input or the API can cause; anything else is a bug and propagates.
EXPECTED: tuple[type[Exception], ...] = (MoondreamError, ImageError, FileError, PathError, InputError, Refused)

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
            Refused,
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


# A secret this short cannot be told from ordinary text (nor kept secret): it is left alone. One this long
# is in no word: it is replaced wherever it occurs. Between the two, only where it stands as a word of its own.
MIN_SECRET = 4
LONG_SECRET = 12


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with each secret replaced by *** exactly where it occurs, and nothing else touched."""
    for secret in sorted({s for s in secrets if s and len(s.strip()) >= MIN_SECRET}, key=len, reverse=True):
        if len(secret) >= LONG_SECRET:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def describe(exc: Exception, *, endpoint: str, secrets: Iterable[str | None] = ()) -> str:
    """A short message for the model; every secret (API key, credentials in the endpoint) scrubbed from it."""
    return redact(_explain(exc, endpoint), secrets)


@dataclass(frozen=True)
class Explainer:
    """describe() bound to one server's endpoint (as it may be shown) and secrets: what domain code is handed
    as `explain`."""

    endpoint: str
    secrets: tuple[str, ...] = ()

    def __call__(self, exc: Exception) -> str:
        return describe(exc, endpoint=self.endpoint, secrets=self.secrets)


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
