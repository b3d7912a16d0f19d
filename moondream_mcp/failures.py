"""What went wrong, in a sentence for the model: the failures the server expects, their messages, and
failures grouped by reason for work over many items. Knows nothing of MCP."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

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


# ---- arguments that do not fit a tool's schema ------------------------------------------------------

ARGUMENT_PROBLEMS = 5  # listed in one message; the model fixes those and learns of the rest next time
_SHOWN_INPUT = 40  # longest repr of a rejected value repeated back (never a data URL or a whole object)
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})
_SUBJECT = re.compile(r"^[A-Z][a-z]+ (?=must )")
_REWORDED = (
    ("Field required", "is required"),
    ("Extra inputs are not permitted", "is not a known argument"),
    ("Input should be ", "must be "),
    (" should be ", " must be "),
    (" should have ", " must have "),
    (" should match ", " must match "),
    (" after validation", ""),
    ("Value error, ", ""),
)


def invalid_arguments(tool: str, error: ValidationError) -> str:
    """Why a tool's arguments were refused, in sentences for the model: no pydantic links, no type codes,
    no echo of long values; of the shapes a union allows, only the closest one is discussed."""
    problems = [_sentence(e) for e in _closest_branches(error.errors(include_url=False))]
    shown = "; ".join(problems[:ARGUMENT_PROBLEMS])
    more = f" (and {len(problems) - ARGUMENT_PROBLEMS} more)" if len(problems) > ARGUMENT_PROBLEMS else ""
    return f"invalid arguments: {shown}{more}. Correct them and call {tool} again."


def _closest_branches(errors: Sequence[ErrorDetails]) -> list[ErrorDetails]:
    """Where a value could take several shapes (a union), keep the errors of the shape it came closest to."""
    by_branch: dict[tuple[Any, ...], dict[str, list[ErrorDetails]]] = {}
    plain: list[ErrorDetails] = []
    for err in errors:
        at = next((i for i, part in enumerate(err["loc"]) if _is_tag(part)), None)
        if at is None:
            plain.append(err)
        else:
            by_branch.setdefault(tuple(err["loc"][:at]), {}).setdefault(str(err["loc"][at]), []).append(err)
    for branches in by_branch.values():
        closest: list[ErrorDetails] = min(branches.values(), key=len)
        plain += closest
    return plain


def _is_tag(part: int | str) -> bool:
    # pydantic names a union's arm in the error's location: a model (RLGroup), a type (str, list[str]).
    return isinstance(part, str) and (part[:1].isupper() or part in _TYPE_TAGS or not part.replace("_", "").isalnum())


def _sentence(err: ErrorDetails) -> str:
    path, branch = "", ""
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_tag(part):
            branch = f" (as {part})" if part[:1].isupper() else ""
        else:
            path += f".{part}" if path else part
    message = err["msg"]
    for old, new in _REWORDED:
        message = message.replace(old, new)
    message = re.sub(r"\ba valid (?=[aeiou])", "an ", message).replace("a valid ", "a ")
    message = _SUBJECT.sub("", message)  # "List must have…" about `path` is "path must have…"
    if message[:1].isupper():
        message = "is invalid: " + message[0].lower() + message[1:]
    shown = repr(err.get("input"))
    got = (
        f" (got {shown})"
        if err["type"] != "missing" and _scalar(err.get("input")) and len(shown) <= _SHOWN_INPUT
        else ""
    )
    return f"{path or 'the arguments'}{branch} {message}{got}"


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
