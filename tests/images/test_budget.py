"""The memory budget shared by every image in flight: weighted, first come first served, never stuck."""

from __future__ import annotations

import anyio
import pytest

from moondream_mcp.images.budget import MemoryBudget

pytestmark = pytest.mark.anyio


async def test_holders_never_exceed_the_capacity_and_are_served_in_arrival_order() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []
    release = anyio.Event()

    async def hold(name: str, amount: int) -> None:
        async with budget.hold(amount):
            order.append(name)
            await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold, "big", 70)
            await wait_until(lambda: budget.in_use == 70)
            tasks.start_soon(hold, "large", 60)  # must wait for big
            await wait_until(lambda: len(budget._waiting) == 1)
            tasks.start_soon(hold, "small", 10)  # would fit now, but may not overtake the large one
            await wait_until(lambda: len(budget._waiting) == 2)
            assert order == ["big"]
            release.set()

    assert order == ["big", "large", "small"]
    assert budget.peak <= 100 and budget.in_use == 0


async def test_a_request_larger_than_the_budget_runs_alone_rather_than_never() -> None:
    budget = MemoryBudget(100)

    with anyio.fail_after(10):
        async with budget.hold(10_000) as held:
            assert held == 100


async def test_a_waiter_cancelled_in_the_queue_lets_those_behind_it_through() -> None:
    budget = MemoryBudget(100)
    got: list[str] = []

    async def hold(name: str, amount: int) -> None:
        async with budget.hold(amount):
            got.append(name)

    with anyio.fail_after(10):
        async with budget.hold(50), anyio.create_task_group() as tasks:
            doomed = anyio.CancelScope()
            tasks.start_soon(hold_in, doomed, budget, 80)
            await wait_until(lambda: len(budget._waiting) == 1)
            tasks.start_soon(hold, "small", 40)
            await wait_until(lambda: len(budget._waiting) == 2)
            doomed.cancel()
            await wait_until(lambda: got == ["small"])

    assert budget.in_use == 0


async def hold_in(scope: anyio.CancelScope, budget: MemoryBudget, amount: int) -> None:
    with scope:
        async with budget.hold(amount):
            pytest.fail("granted although the holder ahead never let go")


async def wait_until(condition) -> None:  # type: ignore[no-untyped-def]
    while not condition():
        await anyio.lowlevel.checkpoint()
