"""The Emulator: an ASGI app serving the skills, the tuning API and the Batch API under /v1, with auth,
rate limits, faults and a request log.

Every request to the API paths passes one gate before it reaches a handler: it is logged, delayed by
the configured latency, given a pending injected fault if one matches (an injected delay holds back
only the answer: the request is still processed at once), then checked for its key and its rate.
Batch result files (under /files/, standing in for a storage host) pass the same gate but need no key
and count against no rate. Paths under /_emulator/ control the emulator itself (for tests and
benchmarks run out of process) and pass no gate.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .batch import handlers as batch
from .batch.jobs import FINISHED, BatchJobs
from .batch.uploads import Scratch, Spooled, Uploads, spool_body
from .chat import handlers as chat
from .errors import ApiError, error_response
from .skills.handlers import SKILLS, SkillContext, run_skill
from .tuning.finetunes import AppliedStep, TuningState
from .tuning.handlers import Handler, Received, TuningApi

AUTH_HEADER = "x-moondream-auth"
ADMIN_PREFIX = "/_emulator/"
STORAGE_PREFIX = "/files/"  # batch result files: the emulator's stand-in for a storage host
# Far above the 10 MB image limit: larger bodies are refused unread rather than held in memory.
MAX_BODY_BYTES = 32 * 1024 * 1024
_LISTED_TEXT_CHARS = 4096  # longer logged bodies are listed over HTTP by their length only
_STATE = "moondream_emulator.request"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class EmulatorConfig:
    """How the emulator behaves; read on every request, so changing it takes effect at once."""

    keys: frozenset[str] = frozenset()  # accepted API keys; empty: any non-empty key
    no_auth: bool = False  # Moondream Station: no key needed, request errors as HTTP 200 {"error": "..."}
    latency: float = 0.0  # seconds added before every answer
    rate_limit: float | None = None  # requests per second per key; None: unlimited
    batch_lines_per_file: int = 1000  # output lines per batch result file
    # Base of batch result file URLs ("http://files.local:2021"); None: the base URL the client called,
    # with 127.0.0.1 and localhost swapped, so that storage is another host than the API (see batch/handlers.py).
    batch_files_url: str | None = None
    train_step_seconds: float = 0.0  # how long a train step takes before it is applied and answered
    # Smallest batch upload part but the last, as the storage behind the API refuses smaller ones at completion.
    # Tests of the emulator's uploads lower it, so that a few kilobytes can be cut into several parts.
    batch_min_part_bytes: int = 5 * 1024 * 1024

    def __post_init__(self) -> None:
        if isinstance(self.keys, str):
            raise TypeError("keys must be a collection of keys, not one string (see config_from_args)")
        self.keys = frozenset(self.keys)
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 (or None for no limit)")
        if self.train_step_seconds < 0:
            raise ValueError("train_step_seconds must be >= 0")
        if self.batch_lines_per_file < 1:
            raise ValueError("batch_lines_per_file must be >= 1")


@dataclass
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: dict[str, Any] | None  # the parsed body when it was a JSON object
    status: int  # the status answered; 0 while unanswered or when the connection was dropped
    at: float  # time.monotonic() on arrival
    # The body as received (undecodable bytes replaced); None if too large, or an uploaded batch part.
    body_text: str | None = None
    response_text: str | None = None  # the body answered, exactly as sent; None for streams and drops


@dataclass
class _Fault:
    kind: Literal["status", "drop", "truncate", "delay"]
    remaining: int
    path: str | None = None  # the request path ends with it; "~/part": the path contains "/part"
    method: str | None = None
    status: int = 0
    retry_after: float | None = None
    body: str | None = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path is None:
            return True
        return self.path[1:] in path if self.path.startswith("~") else path.endswith(self.path)


@dataclass
class _RequestState:
    """What the gate learnt about a request, handed on to its handler through the ASGI scope."""

    body: Any  # parsed JSON, or _NOT_JSON
    text: str | None  # the body as text, when it was UTF-8
    too_large: bool
    abort: Callable[[], None] = field(repr=False)
    spooled: Spooled | None = None  # an uploaded batch part, on disk


_NOT_JSON = object()


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def _retry_after_header(seconds: float) -> str:
    return f"{seconds:g}"


def _fault_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return f"{phrase[0]}{phrase[1:].lower()} (injected by the emulator)"


def _transport_of(send: Send) -> Any:
    """The connection's asyncio transport when served by uvicorn, else None.

    ASGI has no way to close a connection without answering, so a dropped connection reaches
    past it: uvicorn's `send` is a bound method of its request cycle, which holds the transport.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


class _RateLimiter:
    """A sliding window per key: at most `rate` requests in any 1-second window (for a rate under 1, one
    request in any 1/rate seconds).

    How the real API counts is undocumented; a sliding window is the strictest reading of "N requests per
    second", so a client that passes here passes a token bucket too. Refused requests do not count.
    """

    def __init__(self) -> None:
        self._arrivals: dict[str, deque[float]] = {}

    def wait_needed(self, key: str, rate: float, now: float) -> float:
        """0 if a request may go now (and count it), else the seconds until one may."""
        capacity = max(1, math.floor(rate))
        window = capacity / rate
        arrivals = self._arrivals.setdefault(key, deque())
        while arrivals and arrivals[0] <= now - window:
            arrivals.popleft()
        if len(arrivals) < capacity:
            bisect.insort(arrivals, now)  # judged after the latency: not always in order of arrival
            return 0.0
        return arrivals[0] + window - now

    def clear(self) -> None:
        self._arrivals.clear()


class Emulator:
    """A local stand-in for the Moondream API, for tests, benchmarks and offline use.

    `app` is the ASGI application; serve it with `running_emulator` (tests) or `serve_forever`.
    `tuning` holds the tuning API's state: finetunes, their policies and checkpoints; `batches` the
    Batch API's jobs, and `batch_uploads` its open multipart uploads, both on disk in a temporary
    directory of the emulator's own (removed by clear() and close()).
    """

    # Parts of this size or more are refused with 413 (tests lower it rather than upload 100 MB).
    batch_part_limit = 100 * 1024 * 1024

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.requests: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        # Tests inject faults and read the log from their own thread while the server runs in another.
        self._lock = threading.Lock()
        self._limiter = _RateLimiter()
        self.tuning = TuningState()
        self._scratch = Scratch()
        self.batch_uploads = Uploads(self._scratch)
        self.batches = BatchJobs(self._scratch, self.tuning.checkpoint_policy)
        self.app = _EmulatorApp(
            self,
            routes=self._routes(),
            exception_handlers={HTTPException: self._http_exception},
        )

    # --- control ---------------------------------------------------------------------------------

    def inject(
        self,
        status: int,
        *,
        retry_after: float | None = None,
        body: str | None = None,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` requests (whose path ends with `path`, if given, and whose method is
        `method`, if given) with `status`. A `path` starting with "~" matches any path containing the
        rest ("~/batch/": every call on an upload or a batch, and its result files).

        The body is the API's nested JSON error, or `body` verbatim as text/plain (say
        "error code: 524"); `retry_after` seconds go in a Retry-After header.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        self._add(_Fault("status", times, path, method, status=status, retry_after=retry_after, body=body))

    def inject_drop(self, times: int = 1, *, path: str | None = None, method: str | None = None) -> None:
        """Close the connection of the next `times` requests (matched as by inject) without any response."""
        self._add(_Fault("drop", times, path, method))

    def inject_truncate(self, times: int = 1, *, path: str | None = None, method: str | None = None) -> None:
        """End the next `times` streamed responses after their first event, with no completion event."""
        self._add(_Fault("truncate", times, path, method))

    def inject_delay(
        self, seconds: float, *, times: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """Hold back the answer to the next `times` requests (matched as by inject) for `seconds`.

        The request is processed at once, as usual (a train step is applied): only its answer waits.
        So a client that gives up sooner sees a timeout for work that was done.
        """
        if not seconds >= 0:
            raise ValueError("seconds must be >= 0")
        self._add(_Fault("delay", times, path, method, seconds=seconds))

    @property
    def hold_batches(self) -> bool:
        """While True, batch jobs wait in "processing" (with no line answered) until release_batches()."""
        return self.batches.hold

    @hold_batches.setter
    def hold_batches(self, value: bool) -> None:
        self.batches.hold = value

    def release_batches(self) -> None:
        """Let every batch job held so far go on."""
        self.batches.release()

    def fail_batch_lines(self, count: int) -> None:
        """Make the first `count` lines of the next batch job fail, with code "processing_error"."""
        self.batches.fail_lines(count)

    async def wait_for_batch(self, batch_id: str, *statuses: str) -> str:
        """Wait until batch `batch_id` has one of `statuses` (default: completed or failed); that status.

        Raises LookupError for an unknown (or cleared) batch. Bound it with anyio.fail_after.
        """
        gave_up = threading.Event()
        wait = functools.partial(self.batches.wait, batch_id, statuses or FINISHED, gave_up)
        try:
            status = await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
        finally:
            # A cancelled wait leaves its thread behind: let it go too.
            gave_up.set()
            self.batches.wake()
        assert status is not None
        return status

    def clear(self) -> None:
        """Forget pending faults, the request log, the log of applied train steps, rate-limit history,
        and everything of the Batch API: uploads, jobs (running ones stop), their files and the batch
        knobs (hold_batches, fail_batch_lines).

        Finetunes and their checkpoints stay.
        """
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self._limiter.clear()
        self.tuning.clear_log()
        self.close()

    def close(self) -> None:
        """Forget the Batch API's uploads and jobs and remove their files; the emulator stays usable."""
        self.batch_uploads.clear()
        self.batches.clear()
        self._scratch.reset()

    @property
    def train_steps(self) -> list[AppliedStep]:
        """Every train step applied since the last clear(), in order."""
        return self.tuning.applied

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take(self, kinds: tuple[str, ...], method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- the gate --------------------------------------------------------------------------------

    async def _serve(self, scope: Scope, receive: Receive, send: Send, app: Callable[..., Awaitable[None]]) -> None:
        spooled = None
        if scope["method"] == "PUT" and scope["path"].startswith(batch.PREFIX + "/"):
            # A batch part may be near 100 MB: it goes to disk as it arrives, never whole into memory.
            raw = b""
            spool = self.batch_uploads.spool_path()
            spooled, too_large = await spool_body(receive, spool, self.batch_part_limit)
        else:
            raw, too_large = await _read_body(receive)
        try:
            await self._gate(scope, receive, send, app, raw, too_large, spooled)
        finally:
            if spooled is not None:
                await anyio.Path(spooled.path).unlink(missing_ok=True)  # unless the handler kept it

    async def _gate(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: Callable[..., Awaitable[None]],
        raw: bytes,
        too_large: bool,
        spooled: Spooled | None,
    ) -> None:
        method, path = scope["method"], scope["path"]
        body = _parse_json(raw)
        text = _text(raw)
        entry = LoggedRequest(
            method=method,
            path=path,
            headers=_headers(scope),
            json=body if isinstance(body, dict) else None,
            status=0,
            at=time.monotonic(),
            body_text=None if too_large or spooled is not None else raw.decode("utf-8", "replace"),
        )
        with self._lock:
            self.requests.append(entry)
        delay = self._take(("delay",), method, path)
        answered: list[bytes] | None = None  # the response body so far, unless it is a stream

        async def logged_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                if delay is not None:
                    await anyio.sleep(delay.seconds)
                entry.status = message["status"]
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                answered = None if content_type.startswith(b"text/event-stream") else []
            elif message["type"] == "http.response.body" and answered is not None:
                answered.append(message.get("body", b""))
                if not message.get("more_body", False):
                    entry.response_text = b"".join(answered).decode("utf-8", "replace")
            await send(message)

        replayed = False

        async def replay() -> Message:
            # The handler reads the body the gate already consumed.
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        transport = _transport_of(send)
        scope[_STATE] = _RequestState(
            body, text, too_large, abort=transport.abort if transport else lambda: None, spooled=spooled
        )

        if self.config.latency > 0:
            await anyio.sleep(self.config.latency)
        fault = self._take(("status", "drop"), method, path)
        if fault is not None and fault.kind == "drop":
            await _drop(transport, receive)
            return
        if fault is not None:
            response: Response | None = self._fault_response(fault)
        elif path.startswith(STORAGE_PREFIX):
            response = None  # storage is reached by signed URL: no key, no rate limit
        else:
            response = self._refusal(entry.headers, entry.at, path)
        if response is not None:
            await response(scope, replay, logged_send)
            return
        await app(scope, replay, logged_send)

    def _fault_response(self, fault: _Fault) -> Response:
        headers = {} if fault.retry_after is None else {"Retry-After": _retry_after_header(fault.retry_after)}
        if fault.body is not None:
            return PlainTextResponse(fault.body, status_code=fault.status, headers=headers)
        error = ApiError(fault.status, _fault_message(fault.status), headers=headers)
        return error_response(error, station=self.config.no_auth, keep_status=True)

    def _refusal(self, headers: dict[str, str], arrived: float, path: str) -> Response | None:
        """A 401 for a missing or unknown key, a 429 over the rate limit; None to let the request on.

        The key comes in X-Moondream-Auth, but to the OpenAI-compatible chat endpoint as a bearer token.
        """
        config = self.config
        bearer = path == chat.PATH
        if bearer:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        else:
            key = headers.get(AUTH_HEADER, "")
        if not config.no_auth:
            if not key.strip():
                where = "an Authorization: Bearer header" if bearer else f"the {AUTH_HEADER} header"
                error = ApiError(401, f"missing API key: send it in {where}", code="missing_api_key")
                return error_response(error, station=False)
            if config.keys and key not in config.keys:
                return error_response(ApiError(401, "invalid API key", code="invalid_api_key"), station=False)
        if config.rate_limit is not None:
            with self._lock:
                wait = self._limiter.wait_needed(key, config.rate_limit, arrived)
            if wait > 0:
                error = ApiError(
                    429,
                    f"rate limit exceeded: {config.rate_limit:g} requests per second",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                return error_response(error, station=config.no_auth, keep_status=True)
        return None

    # --- routes ----------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        routes = [Route(f"/v1/{skill}", self._skill_endpoint(skill), methods=["POST"]) for skill in SKILLS]
        routes.append(Route(chat.PATH, self._chat_endpoint, methods=["POST"]))
        routes += TuningApi(self.tuning, step_seconds=lambda: self.config.train_step_seconds).routes(
            self._tuning_endpoint
        )
        routes += batch.BatchApi(
            self.batch_uploads,
            self.batches,
            self.tuning.checkpoint_policy,
            lines_per_file=lambda: self.config.batch_lines_per_file,
            files_url=lambda: self.config.batch_files_url,
            min_part_bytes=lambda: self.config.batch_min_part_bytes,
        ).routes(self._batch_endpoint)
        routes += [
            Route(ADMIN_PREFIX + "faults", self._admin_faults, methods=["POST"]),
            Route(ADMIN_PREFIX + "requests", self._admin_requests, methods=["GET"]),
            Route(ADMIN_PREFIX + "clear", self._admin_clear, methods=["POST"]),
        ]
        return routes

    def _context(self, request: Request) -> SkillContext:
        state: _RequestState = request.scope[_STATE]
        method, path = request.method, request.url.path
        return SkillContext(
            request_id=new_request_id(),
            station=self.config.no_auth,
            take_truncate=lambda: self._take(("truncate",), method, path) is not None,
            abort_connection=state.abort,
            checkpoint_policy=self.tuning.checkpoint_policy,
        )

    def _skill_endpoint(self, skill: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            state: _RequestState = request.scope[_STATE]
            try:
                if state.too_large:
                    raise ApiError(413, "request too large: images are limited to 10 MB", code="request_too_large")
                if state.body is _NOT_JSON:
                    raise ApiError(400, "request body is not valid JSON", code="invalid_json")
                return await run_skill(skill, state.body, self._context(request))
            except ApiError as error:
                return error_response(error, station=self.config.no_auth)

        return endpoint

    async def _chat_endpoint(self, request: Request) -> Response:
        state: _RequestState = request.scope[_STATE]
        try:
            if state.too_large:
                raise ApiError(413, "request too large", code="request_too_large")
            if state.body is _NOT_JSON:
                raise ApiError(400, "request body is not valid JSON", code="invalid_json")
            return await chat.completions(state.body, self._context(request))
        except ApiError as error:
            return error_response(error, station=self.config.no_auth, keep_status=True)

    def _tuning_endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            state: _RequestState = request.scope[_STATE]
            try:
                if self.config.no_auth:
                    raise ApiError(404, "Moondream Station has no tuning API", code="not_found")
                if state.too_large:
                    raise ApiError(413, "request too large", code="request_too_large")
                body = None if state.body is _NOT_JSON else state.body
                return await handler(request, Received(body, state.text))
            except ApiError as error:
                return error_response(error, station=self.config.no_auth, keep_status=True)

        return endpoint

    def _batch_endpoint(self, handler: batch.Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            state: _RequestState = request.scope[_STATE]
            try:
                if self.config.no_auth:
                    raise ApiError(404, "Moondream Station has no Batch API", code="not_found")
                body = None if state.body is _NOT_JSON else state.body
                return await handler(request, batch.Received(body, state.spooled, state.too_large))
            except ApiError as error:
                return error_response(error, station=self.config.no_auth, keep_status=True)

        return endpoint

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = ApiError(exc.status_code, exc.detail, headers=dict(exc.headers or {}))
        return error_response(error, station=self.config.no_auth, keep_status=True)

    async def _admin_faults(self, request: Request) -> Response:
        try:
            spec = await request.json()
        except ValueError:
            spec = None
        try:
            if not isinstance(spec, dict):
                raise TypeError("a JSON object is required")
            path, method = spec.get("path"), spec.get("method")
            if "drop" in spec:
                self.inject_drop(int(spec["drop"]), path=path, method=method)
            elif "truncate" in spec:
                self.inject_truncate(int(spec["truncate"]), path=path, method=method)
            elif "delay" in spec:
                self.inject_delay(float(spec["delay"]), times=int(spec.get("times", 1)), path=path, method=method)
            elif "status" in spec:
                retry_after = spec.get("retry_after")
                self.inject(
                    int(spec["status"]),
                    retry_after=None if retry_after is None else float(retry_after),
                    body=spec.get("body"),
                    times=int(spec.get("times", 1)),
                    path=path,
                    method=method,
                )
            else:
                raise ValueError("give status, drop, truncate or delay")
        except (TypeError, ValueError) as exc:
            return error_response(ApiError(400, f"bad fault: {exc}"), station=False)
        return JSONResponse({"ok": True})

    async def _admin_requests(self, request: Request) -> Response:
        with self._lock:
            entries = [asdict(entry) for entry in self.requests]
        for entry in entries:
            entry["json"] = _without_images(entry["json"])
            for key in ("body_text", "response_text"):
                if entry[key] is not None and len(entry[key]) > _LISTED_TEXT_CHARS:
                    entry[key] = f"<{len(entry[key])} characters>"
        return JSONResponse({"requests": entries})

    async def _admin_clear(self, request: Request) -> Response:
        self.clear()
        return JSONResponse({"ok": True})


class _EmulatorApp(Starlette):
    """Starlette, with the emulator's gate in front of every API path."""

    def __init__(self, emulator: Emulator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(ADMIN_PREFIX):
            # The gate sees uvicorn's own `send`, before Starlette wraps it: a drop needs it.
            await self._emulator._serve(scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, and whether it was cut off for being larger than MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _drop(transport: Any, receive: Receive) -> None:
    if transport is None:
        raise RuntimeError("dropping a connection needs a real server: serve the emulator with running_emulator")
    transport.abort()
    # Return only once the server has seen the connection go, or it would answer 500 on a dead socket.
    with anyio.move_on_after(5):
        while (await receive())["type"] != "http.disconnect":
            pass


def _without_images(value: Any) -> Any:
    """A logged body with image data replaced by its length, for listing over HTTP."""
    if isinstance(value, dict):
        return {
            key: f"<{len(item)} characters>"
            if key in ("image_url", "url") and isinstance(item, str)  # skills; chat's {image_url: {url}}
            else _without_images(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_without_images(item) for item in value]
    return value
