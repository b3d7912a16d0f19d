"""Progress while a tool waits: the domain's own reports passed on and, between them, a beat every
MOONDREAM_MCP_PROGRESS_EVERY seconds, so a client that resets its timeout on progress keeps waiting.

MCP wants each notification's progress to exceed the last: a report that would not is nudged up by a
hair, as is every beat. Without a client asking for progress, notifications go nowhere (the SDK drops them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from ..state import Ctx

log = logging.getLogger(__name__)

_NUDGE = 1e-3


class Progress:
    def __init__(self, ctx: Ctx, message: str) -> None:
        self._ctx = ctx
        self._message = message
        self._done = 0.0
        self._total: float | None = None
        self._started = self._sent = time.monotonic()

    async def report(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """The domain's progress (the signature domain modules take as `progress`)."""
        self._total = total
        self._message = message or self._message
        await self._send(done)

    async def beat(self, every: float) -> None:
        while True:
            await anyio.sleep(max(0.0, self._sent + every - time.monotonic()))
            if time.monotonic() - self._sent >= every:
                await self._send(self._done, beat=True)

    async def _send(self, done: float, *, beat: bool = False) -> None:
        self._done = done if done > self._done else self._done + _NUDGE
        self._sent = time.monotonic()
        message = self._message
        if beat:
            message += f" ({self._sent - self._started:.0f} s)"
        await self._ctx.report_progress(self._done, self._total, message)


@asynccontextmanager
async def progress(ctx: Ctx, message: str) -> AsyncIterator[Progress]:
    """A Progress for the block, beating while it runs; `message` says what is awaited."""
    tracker = Progress(ctx, message)
    every = ctx.request_context.lifespan_context.settings.progress_every
    failure: Exception | None = None

    async def beat() -> None:
        try:
            await tracker.beat(every)
        except Exception:  # a client gone away: nobody left to keep waiting
            log.debug("progress beat stopped", exc_info=True)

    async with anyio.create_task_group() as beating:
        beating.start_soon(beat)
        try:
            yield tracker
        except Exception as exc:
            failure = exc  # raised below, outside the task group, so it keeps its own type
        finally:
            beating.cancel_scope.cancel()
    if failure is not None:
        raise failure
