"""The HTTP plumbing every Moondream call goes through: auth, errors, retries, streaming."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from json import dumps
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx2
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ValidationError

from .. import __version__
from ..config import IN_FLIGHT, is_cloud, split_credentials
from ..images.prepared import DataURL
from .errors import (
    RETRYABLE_STATUSES,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidRequestError,
    MoondreamError,
    NotConfiguredError,
    StreamError,
    UnexpectedResponseError,
    status_error,
)

log = logging.getLogger(__name__)

USER_AGENT = f"moondream-mcp/{__version__}"

# Retry policy, in one place. Backoff is exponential with jitter (stamina); a Retry-After from
# the server replaces the backoff, up to `retry_after_cap` seconds. A 429 says only "not now": it is
# retried for as long as the call's budget lasts, and does not count against MAX_ATTEMPTS, so that
# a job outrunning a limit it was not told of slows down instead of failing.
MAX_ATTEMPTS = 5
WAIT_INITIAL = 0.5
WAIT_MAX = 8.0
WAIT_JITTER = 0.5
RETRY_BUDGET = 120.0  # seconds, across every attempt of one call
# Pacing at exactly the limit puts limit+1 arrivals into some 1-second window at the server as soon as
# network jitter brings two of them closer. Spacing requests (1 + JITTER_MARGIN)/limit apart means limit+1
# consecutive requests span 1 + JITTER_MARGIN seconds: only jitter above the margin can squeeze them into one
# second. It costs JITTER_MARGIN/(1 + JITTER_MARGIN) of the throughput (5%). 30 ms proved too little even
# on one machine: a new connection's first request, or a busy event loop, moves an arrival by more.
JITTER_MARGIN = 0.05  # seconds

# Pacing: requests worth keeping in flight to fill the rate limit, by Little's law (rate x latency),
# with headroom for the local work around each request; never fewer than IN_FLIGHT nor more than
# MAX_IN_FLIGHT (each one may hold a prepared image while it waits its turn).
MAX_IN_FLIGHT = 64
PACING_HEADROOM = 1.25
_LATENCY_WEIGHT = 0.2  # of each new sample in the moving average

# "idempotent": retry whatever may have failed in passing.
# "unsent": retry only when the request certainly had no effect (never connected, or 429).
RetryPolicy = Literal["idempotent", "unsent", "never"]


def _should_retry(
    policy: RetryPolicy, retry_after_cap: float, max_attempts: int
) -> Callable[[Exception], bool | float]:
    """The retry decision for one call: a fresh count of its failures other than 429."""
    failures = 0

    def hook(exc: Exception) -> bool | float:
        nonlocal failures
        if policy == "never":
            return False
        if isinstance(exc, APIStatusError) and exc.status_code == 429:
            return True if exc.retry_after is None else min(exc.retry_after, retry_after_cap)
        failures += 1
        if failures >= max_attempts:
            return False
        if isinstance(exc, APIStatusError):
            if policy == "idempotent" and exc.status_code in RETRYABLE_STATUSES:
                if exc.retry_after is not None:
                    return min(exc.retry_after, retry_after_cap)
                return True
            return False
        if isinstance(exc, APIConnectionError):
            return policy == "idempotent" or not exc.sent
        if isinstance(exc, StreamError):
            return policy == "idempotent"
        return False

    return hook


M = TypeVar("M", bound=BaseModel)


def segment(value: object) -> str:
    """An id as one URL path segment: escaped, so no id can reach another endpoint ("..", "/", "?")."""
    text = str(value)
    if text in ("", ".", ".."):
        raise InvalidRequestError(f"not a valid id: {text!r}")
    return quote(text, safe="")


def parse(model: type[M], body: Any) -> M:
    """The typed result of an answer, or UnexpectedResponseError if it lacks the documented shape."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise UnexpectedResponseError(
            f"the API's answer is not a valid {model.__name__} ({exc.error_count()} problems)"
        ) from None


def _connection_error(exc: httpx2.TransportError, url: str) -> APIConnectionError:
    if isinstance(exc, httpx2.ConnectTimeout):
        return APITimeoutError(f"timed out connecting to {url}", sent=False)
    if isinstance(exc, httpx2.TimeoutException):
        return APITimeoutError(f"timed out waiting for {url}", sent=not isinstance(exc, httpx2.PoolTimeout))
    if isinstance(exc, httpx2.ConnectError):
        return APIConnectionError(f"could not connect to {url}: {exc}", sent=False)
    return APIConnectionError(f"connection to {url} failed: {type(exc).__name__}", sent=True)


def _timeout(seconds: float) -> httpx2.Timeout:
    # Connecting should be quick; answering may take the whole timeout.
    return httpx2.Timeout(seconds, connect=min(10.0, seconds))


def _body(json: Any, content: bytes | None, headers: dict[str, str] | None) -> dict[str, Any]:
    """The request's body arguments: JSON as httpx2 writes it (compact, UTF-8), except that data URLs made by
    the image pipeline go in as they are; escaping them would cost milliseconds on every call, and so would
    copying them more than once (the parts are joined in one go)."""
    if not (isinstance(json, dict) and any(isinstance(v, DataURL) for v in json.values())):
        return {"json": json, "content": content, "headers": headers}
    parts: list[bytes] = []
    for key, value in json.items():
        if isinstance(value, DataURL):
            parts += [b",", dumps(key).encode(), b':"', value.encode("ascii"), b'"']
    rest = {key: value for key, value in json.items() if not isinstance(value, DataURL)}
    if rest:
        parts += [b",", dumps(rest, ensure_ascii=False, separators=(",", ":"), allow_nan=False)[1:-1].encode()]
    parts[0] = b"{"
    parts.append(b"}")
    return {
        "content": b"".join(parts),
        "headers": {"Content-Type": "application/json", **(headers or {})},
    }


def _check_body(response: httpx2.Response, *, errors_in_body: bool = False) -> Any:
    """The JSON body of a response, or the error it stands for. `errors_in_body`: a 200 whose JSON has a
    top-level `error` is a failure too (Moondream Station's skill answers); elsewhere such a body is a result,
    as a failed batch is."""
    if response.is_error:
        raise status_error(response)
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        raise APIStatusError(
            f"the API answered HTTP {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
        ) from None
    if errors_in_body and isinstance(body, dict) and body.get("error") not in (None, ""):
        raise status_error(response, body)
    return body


class APIClient:
    """One long-lived connection pool to one Moondream endpoint."""

    def __init__(
        self,
        *,
        endpoint: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry_after_cap: float = 30.0,
        max_attempts: int = MAX_ATTEMPTS,
        rate_limit: float | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        # Credentials in the URL (http://user:password@host) become basic auth, so no URL the client
        # builds, logs or puts in an error carries them.
        clean, credentials = split_credentials(endpoint.rstrip("/"))
        self.endpoint = clean
        self._basic_auth = httpx2.BasicAuth(*credentials) if credentials else None
        # Every attempt of every call, retries included, waits its turn: one request every (1 + margin)/rate s,
        # never in bursts. How the server counts is undocumented; paced so, no 1-second window at the server
        # holds more than `rate` arrivals unless network jitter bunches them by over JITTER_MARGIN seconds.
        self._limiter = AsyncLimiter(1, (1 + JITTER_MARGIN) / rate_limit) if rate_limit else None
        self.rate_limit = rate_limit or None
        self.latency: float | None = None  # moving average of answered requests' round trips, in seconds
        self._api_key = api_key or None
        self._retry_after_cap = retry_after_cap
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None

    @property
    def _http(self) -> httpx2.AsyncClient:
        # Made on first use: building one loads the system's CA certificates, which a server answering
        # only its tool list at start-up never needs.
        if self._client is None:
            self._client = httpx2.AsyncClient(
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=_timeout(self._timeout),
                transport=self._transport,
                follow_redirects=False,
                trust_env=True,
                auth=self._basic_auth,
            )
        return self._client

    async def __aenter__(self) -> APIClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def is_cloud(self) -> bool:
        return is_cloud(self.endpoint)

    def _url(self, path: str) -> str:
        return f"{self.endpoint}/{path.lstrip('/')}"

    def _auth(self, bearer: bool = False) -> dict[str, str]:
        """The key as the endpoint takes it; nothing when there is none (Moondream Station)."""
        if not self._api_key:
            return {}
        return {"Authorization": f"Bearer {self._api_key}"} if bearer else {"X-Moondream-Auth": self._api_key}

    def _require_configured(self) -> None:
        if self.is_cloud and not self._api_key:
            raise NotConfiguredError(
                "MOONDREAM_API_KEY is not set. Set it to a Moondream Cloud key, or set "
                "MOONDREAM_ENDPOINT to a Moondream Station (http://localhost:2020/v1) or the emulator."
            )

    def in_flight(self) -> int:
        """Requests worth keeping in flight now: enough to fill the rate limit at the latency seen."""
        if self.rate_limit is None or self.latency is None:
            return IN_FLIGHT
        paced = self.rate_limit / (1 + JITTER_MARGIN)  # what the limiter lets through
        wanted = math.ceil(paced * self.latency * PACING_HEADROOM) + 1
        return max(IN_FLIGHT, min(MAX_IN_FLIGHT, wanted))

    def _observe(self, seconds: float) -> None:
        previous = self.latency
        self.latency = seconds if previous is None else previous + _LATENCY_WEIGHT * (seconds - previous)

    def _retrying(self, policy: RetryPolicy) -> Any:
        import stamina  # with the first request: a server that is only listed never retries anything

        return stamina.retry_context(
            on=_should_retry(policy, self._retry_after_cap, self._max_attempts),
            attempts=None,  # bounded by the budget below, and by max_attempts for failures other than 429
            timeout=RETRY_BUDGET,
            wait_initial=WAIT_INITIAL,
            wait_max=WAIT_MAX,
            wait_jitter=WAIT_JITTER,
        )

    async def request(self, method: str, path: str, **options: Any) -> Any:
        """Send one request (retrying as the policy allows) and return its JSON body; options as request_raw."""
        body, _ = await self.request_raw(method, path, **options)
        return body

    async def request_raw(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy = "idempotent",
        read_timeout: float | None = None,
        errors_in_body: bool = False,
        bearer: bool = False,
    ) -> tuple[Any, str]:
        """Like request(), but also return the body's text exactly as it arrived. `read_timeout` replaces the
        client's timeout for this call (train steps take minutes); `errors_in_body` as for _check_body;
        `bearer` sends the key as `Authorization: Bearer` (the OpenAI-compatible endpoint's way)."""
        self._require_configured()
        url = self._url(path)
        headers = {**(headers or {}), **self._auth(bearer)}
        async for attempt in self._retrying(retry):
            with attempt:
                await self._turn()
                sent = time.monotonic()
                try:
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        timeout=_timeout(read_timeout) if read_timeout is not None else httpx2.USE_CLIENT_DEFAULT,
                        **_body(json, content, headers),
                    )
                except httpx2.InvalidURL:
                    raise InvalidRequestError(f"cannot build a valid URL for {path!r}") from None
                except httpx2.TransportError as exc:
                    raise _connection_error(exc, url) from None
                self._observe(time.monotonic() - sent)
                if attempt.num > 1:
                    log.info("%s %s answered on attempt %d", method, path, attempt.num)
                return _check_body(response, errors_in_body=errors_in_body), response.text
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def stream(
        self,
        path: str,
        *,
        json: Any,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """POST with ``stream: true`` and return every server-sent event, in order, up to the completed one.

        A stream that ends before an event with ``completed: true`` raises StreamError. The whole
        request is retried (it is idempotent), so ``on_event`` may see events of a failed attempt.
        """
        self._require_configured()
        url = self._url(path)
        async for attempt in self._retrying("idempotent"):
            with attempt:
                return await self._stream_once(url, json, on_event)
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def stream_url(self, url: str) -> AsyncIterator[httpx2.Response]:
        """GET an absolute URL the API handed out (e.g. a result file), streaming the body."""
        # The key goes to the API's own host only, never to a storage host.
        elsewhere = httpx2.URL(url).host != httpx2.URL(self.endpoint).host
        request = self._http.build_request("GET", url, headers=None if elsewhere else self._auth())
        try:
            if elsewhere:  # the endpoint's credentials are for the endpoint alone
                response = await self._http.send(request, stream=True, auth=None)
            else:
                response = await self._http.send(request, stream=True)
        except httpx2.TransportError as exc:
            raise _connection_error(exc, url.split("?")[0]) from None
        try:
            if response.is_error:
                await response.aread()
                raise status_error(response)
            yield response
        finally:
            await response.aclose()

    async def _turn(self) -> None:
        if self._limiter is not None:
            await self._limiter.acquire()

    async def _stream_once(
        self, url: str, body: Any, on_event: Callable[[dict[str, Any]], None] | None
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        await self._turn()
        sent = time.monotonic()
        try:
            async with self._http.sse(url, method="POST", json=body, headers=self._auth()) as source:
                response = source.response
                content_type = response.headers.get("content-type", "")
                if response.is_error or not content_type.startswith("text/event-stream"):
                    await response.aread()
                    # An error, or a server that ignored stream=true and answered plain JSON.
                    return [{**_check_body(response, errors_in_body=True), "completed": True}]
                async for sse in source:
                    if not sse.data.strip():
                        continue
                    try:
                        event = sse.json()
                    except ValueError:
                        raise StreamError(f"the stream from {url} carried an event that is not JSON") from None
                    if not isinstance(event, dict):
                        continue
                    if event.get("error") not in (None, ""):
                        raise status_error(response, event)
                    events.append(event)
                    if on_event is not None:
                        on_event(event)
                    if event.get("completed") is True:
                        self._observe(time.monotonic() - sent)
                        return events
        except httpx2.TransportError as exc:
            if events:
                raise StreamError(f"the stream from {url} broke off after {len(events)} events") from None
            raise _connection_error(exc, url) from None
        raise StreamError(f"the stream from {url} ended before it completed")


__all__ = ["APIClient", "MoondreamError", "RetryPolicy"]
