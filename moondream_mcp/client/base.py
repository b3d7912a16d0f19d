"""The HTTP plumbing every Moondream call goes through: auth, errors, retries, streaming."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from json import dumps
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx2
from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ValidationError

from .. import __version__
from ..config import is_cloud
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
# the server replaces the backoff, up to `retry_after_cap` seconds.
MAX_ATTEMPTS = 5
WAIT_INITIAL = 0.5
WAIT_MAX = 8.0
WAIT_JITTER = 0.5
RETRY_BUDGET = 120.0  # seconds, across every attempt of one call

# "idempotent": retry whatever may have failed in passing.
# "unsent": retry only when the request certainly had no effect (never connected, or 429).
RetryPolicy = Literal["idempotent", "unsent", "never"]


def _should_retry(policy: RetryPolicy, retry_after_cap: float) -> Callable[[Exception], bool | float]:
    def hook(exc: Exception) -> bool | float:
        if policy == "never":
            return False
        if isinstance(exc, APIStatusError):
            if exc.status_code == 429 or (policy == "idempotent" and exc.status_code in RETRYABLE_STATUSES):
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


def _body(json: Any, content: bytes | None, headers: dict[str, str] | None) -> dict[str, Any]:
    """The request's body arguments: JSON as httpx2 writes it (compact, UTF-8), except that data URLs made by
    the image pipeline go in as they are; escaping them would cost milliseconds on every call."""
    if not (isinstance(json, dict) and any(isinstance(v, DataURL) for v in json.values())):
        return {"json": json, "content": content, "headers": headers}
    parts = [
        dumps(key).encode() + b':"' + value.encode("ascii") + b'"'
        for key, value in json.items()
        if isinstance(value, DataURL)
    ]
    rest = {key: value for key, value in json.items() if not isinstance(value, DataURL)}
    if rest:
        parts.append(dumps(rest, ensure_ascii=False, separators=(",", ":"), allow_nan=False)[1:-1].encode())
    return {
        "content": b"{" + b",".join(parts) + b"}",
        "headers": {"Content-Type": "application/json", **(headers or {})},
    }


def _check_body(response: httpx2.Response) -> Any:
    """The JSON body of a response, or the error it stands for."""
    if response.is_error:
        raise status_error(response)
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        raise APIStatusError(
            f"the API answered HTTP {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
        ) from None
    # Moondream Station reports failures as 200 {"error": ...}.
    if isinstance(body, dict) and body.get("error") not in (None, ""):
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
        self.endpoint = endpoint.rstrip("/")
        # Every attempt of every call, retries included, waits its turn: one request per 1/rate s.
        # A bucket of one (not of `rate`) leaves the server's own bucket slack for network jitter.
        self._limiter = AsyncLimiter(1, 1 / rate_limit) if rate_limit else None
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
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
            if self._api_key:
                headers["X-Moondream-Auth"] = self._api_key
            self._client = httpx2.AsyncClient(
                headers=headers,
                # Connecting should be quick; answering may take the whole timeout.
                timeout=httpx2.Timeout(self._timeout, connect=min(10.0, self._timeout)),
                transport=self._transport,
                follow_redirects=False,
                trust_env=True,
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

    def _require_configured(self) -> None:
        if self.is_cloud and not self._api_key:
            raise NotConfiguredError(
                "MOONDREAM_API_KEY is not set. Set it to a Moondream Cloud key, or set "
                "MOONDREAM_ENDPOINT to a Moondream Station (http://localhost:2020/v1) or the emulator."
            )

    def _retrying(self, policy: RetryPolicy) -> Any:
        import stamina  # with the first request: a server that is only listed never retries anything

        return stamina.retry_context(
            on=_should_retry(policy, self._retry_after_cap),
            attempts=self._max_attempts,
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
    ) -> tuple[Any, str]:
        """Like request(), but also return the body's text exactly as it arrived."""
        self._require_configured()
        url = self._url(path)
        async for attempt in self._retrying(retry):
            with attempt:
                await self._turn()
                try:
                    response = await self._http.request(method, url, params=params, **_body(json, content, headers))
                except httpx2.InvalidURL:
                    raise InvalidRequestError(f"cannot build a valid URL for {path!r}") from None
                except httpx2.TransportError as exc:
                    raise _connection_error(exc, url) from None
                if attempt.num > 1:
                    log.info("%s %s answered on attempt %d", method, path, attempt.num)
                return _check_body(response), response.text
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
        request = self._http.build_request("GET", url)
        if httpx2.URL(url).host != httpx2.URL(self.endpoint).host:
            request.headers.pop("X-Moondream-Auth", None)
        try:
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
        try:
            async with self._http.sse(url, method="POST", json=body) as source:
                response = source.response
                content_type = response.headers.get("content-type", "")
                if response.is_error or not content_type.startswith("text/event-stream"):
                    await response.aread()
                    # An error, or a server that ignored stream=true and answered plain JSON.
                    return [{**_check_body(response), "completed": True}]
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
                        return events
        except httpx2.TransportError as exc:
            if events:
                raise StreamError(f"the stream from {url} broke off after {len(events)} events") from None
            raise _connection_error(exc, url) from None
        raise StreamError(f"the stream from {url} ended before it completed")


__all__ = ["APIClient", "MoondreamError", "RetryPolicy"]
