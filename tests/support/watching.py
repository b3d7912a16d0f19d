"""Waiting on training runs through the protocol, and reading what the emulator applied."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from mcp import Client

from tests.support.calls import call


async def wait_for(client: Client, run_id: str, done: Callable[[dict], bool]) -> dict:
    """The run's status once `done` holds; training_status itself waits for the next change (no sleeping)."""
    with anyio.fail_after(40):
        while True:
            status = await call(client, "training_status", run_id=run_id, wait_seconds=10, history=1000)
            if done(status):
                return status


def finished(status: dict) -> bool:
    return status["state"] != "running"


def applied(emulator, finetune_id: str) -> list[int]:
    return [s.step for s in emulator.emulator.train_steps if s.finetune_id == finetune_id]
