"""The HTTP transport's connections, bounded: uvicorn's HTTP/1.1 protocol with header and body timeouts and a
connection cap, and log lines throttled (http_transport.py guards the requests themselves)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("moondream_mcp.http_transport")  # one logger for the whole transport


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 connection, bounded: a request's headers must arrive within `header_timeout` of
    the connection opening (or of the previous answer), its body within `body_timeout` after them, and
    beyond `max_connections` the oldest connection still waiting for a request is closed to make room.

    uvicorn has neither bound: every half-sent request holds a socket forever, until the process runs
    out of file descriptors and accepts no one (logging a traceback at every try). Built for a listener
    by guarded_protocol().
    """

    max_connections: ClassVar[int] = 128
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn
        super().connection_made(transport)
        self._phase = ""
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since = time.monotonic()
        # Closing ones still count until their close completes, a loop turn later: they are not counted twice.
        live = [c for c in self.connections if not c.transport.is_closing()]
        if len(live) > self.max_connections:
            waiting = [c for c in live if isinstance(c, GuardedH11) and c is not self and c._waiting()]
            if not waiting:
                log.info("refused a connection: %d are open, none of them idle", self.max_connections)
                self.transport.close()
                return
            oldest = min(waiting, key=lambda c: c._waiting_since)
            log.info("closed the oldest idle connection: %d are open", self.max_connections)
            oldest.transport.close()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = time.monotonic()
        self._follow()

    def _waiting(self) -> bool:
        """Waiting for a request, or for the rest of one (not for its answer, which may rightly take long)."""
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _follow(self) -> None:
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state is h11.IDLE:
            self._arm("headers", self.header_timeout)
        elif self.conn.their_state is h11.SEND_BODY:
            self._arm("body", self.body_timeout)
        else:
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        if self._phase == phase:
            return
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = ""

    def _expired(self) -> None:
        phase, self._timer = self._phase, None
        log.info("closed a connection whose request %s did not arrive in time", phase)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11]:
    """GuardedH11 with the limits of `settings`, for uvicorn's `http=`."""
    return type(
        "GuardedH11",
        (GuardedH11,),
        {
            "max_connections": settings.http_max_connections,
            "header_timeout": settings.http_header_timeout,
            "body_timeout": settings.http_body_timeout,
        },
    )


class LogThrottle(logging.Filter):
    """At most `burst` records of one kind (logger and message template) every `window` seconds; the
    first one after a quiet spell says how many were dropped. A flood of bad requests then costs a few
    lines a minute, not a traceback each (asyncio logs one for every accept that finds no descriptor)."""

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._kinds: dict[tuple[str, str], tuple[float, int, int]] = {}  # start, passed, dropped

    def filter(self, record: logging.LogRecord) -> bool:
        # Some loggers format their own messages (asyncio puts a timer's due time in each): records
        # whose first line starts alike are alike.
        key = (record.name, str(record.msg).split("\n", 1)[0][:80])
        now = time.monotonic()
        start, passed, dropped = self._kinds.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, passed = now, 0
        if passed >= self.burst:
            self._kinds[key] = (start, passed, dropped + 1)
            return False
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this dropped]"
        if len(self._kinds) > 10_000:  # a logger that puts something new at the start of every line
            self._kinds.clear()
        self._kinds[key] = (start, passed + 1, 0)
        return True


def throttle_logs(throttle: LogThrottle | None = None) -> LogThrottle:
    """Install one throttle on every handler of the root logger (where every record ends up)."""
    throttle = throttle or LogThrottle()
    for handler in logging.getLogger().handlers:
        handler.addFilter(throttle)
    return throttle


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn.Config needs beyond the app, host and port: the guarded connections."""
    return {
        "http": guarded_protocol(settings),
        # asyncio accepts up to `backlog` connections at a time before any of them reaches the cap: so
        # descriptors in use stay within twice the cap, far below the process's limit.
        "backlog": settings.http_max_connections,
        # Idle kept-alive connections go sooner than half-sent ones: nothing is lost by closing them.
        "timeout_keep_alive": min(5.0, settings.http_header_timeout),
        "h11_max_incomplete_event_size": 64 * 1024,  # the request line and headers
    }
