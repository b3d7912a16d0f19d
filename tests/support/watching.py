"""Starting training runs through the protocol and waiting on them, and reading what the emulator applied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
from mcp import Client

from tests.support.calls import call, unique


async def wait_for(client: Client, run_id: str, done: Callable[[dict], bool]) -> dict:
    """The run's status once `done` holds; training_status itself waits for the next change (no sleeping)."""
    with anyio.fail_after(40):
        while True:
            status = await call(client, "training_status", run_id=run_id, wait_seconds=10, history=1000)
            if done(status):
                return status


async def start_run(client: Client, dataset: Path, *, name: str | None = None, **options: object) -> dict:
    """What start_training answers for a run on `dataset`, under a finetune name no other test uses."""
    return await call(client, "start_training", dataset=str(dataset), name=name or unique(), **options)


async def run_to_the_end(client: Client, dataset: Path, **options: object) -> tuple[dict, dict]:
    """What start_training answered, and the run's status once it has finished."""
    started = await start_run(client, dataset, **options)
    return started, await wait_for(client, started["run_id"], finished)


def finished(status: dict) -> bool:
    return status["state"] != "running"


def applied(emulator, finetune_id: str) -> list[int]:
    return [s.step for s in emulator.emulator.train_steps if s.finetune_id == finetune_id]
