"""MemoryBudget: bytes of memory shared by every image in flight, handed out first come, first served.

anyio's CapacityLimiter counts equal tokens; a 60 MB file and a 60 kB one must not weigh the same, so
this is a weighted semaphore. A request larger than the whole budget is trimmed to it: it then runs
alone rather than never.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class MemoryBudget:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0  # the most ever held at once: what benchmarks and tests read
        self._waiting: deque[tuple[int, anyio.Event]] = deque()

    @asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[int]:
        """Hold `amount` bytes (at most the capacity) for the body of the `with`; yields what is held."""
        amount = max(0, min(amount, self.capacity))
        await self._acquire(amount)
        try:
            yield amount
        finally:
            self._release(amount)

    async def _acquire(self, amount: int) -> None:
        # FIFO: a large request at the head is not overtaken by a stream of small ones, or it would starve.
        if not self._waiting and self.in_use + amount <= self.capacity:
            self._take(amount)
            return
        ticket = (amount, anyio.Event())
        self._waiting.append(ticket)
        try:
            await ticket[1].wait()
        except BaseException:
            if ticket[1].is_set():
                self._release(amount)  # granted just as the wait was cancelled: give it back
            else:
                self._waiting.remove(ticket)
                self._wake()  # the head may have changed
            raise

    def _take(self, amount: int) -> None:
        self.in_use += amount
        self.peak = max(self.peak, self.in_use)

    def _release(self, amount: int) -> None:
        self.in_use -= amount
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.in_use + self._waiting[0][0] <= self.capacity:
            amount, granted = self._waiting.popleft()
            self._take(amount)
            granted.set()
