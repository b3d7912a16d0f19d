"""The guided-use prompts and the per-run log resource, through the protocol."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.calls import call
from tests.labelled import detect_dataset

pytestmark = pytest.mark.anyio


def unique(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


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


async def test_the_prompts_walk_through_the_loop_and_each_run_has_a_log_resource(
    client: Client, workdir: Path
) -> None:
    prompts = {p.name for p in (await client.list_prompts()).prompts}
    assert {"finetune-detector", "finetune-query"} <= prompts
    guide = await client.get_prompt("finetune-detector", {"dataset": "/data/boxes.jsonl"})
    text = guide.messages[0].content.text
    for tool in ("inspect_dataset", "evaluate", "start_training", "training_status", "model="):
        assert tool in text
    assert text.index("inspect_dataset") < text.index("start_training") < text.index("training_status")

    dataset = detect_dataset(workdir, count=3)
    started = await call(client, "start_training", dataset=str(dataset), name=unique(), steps=2,
                         groups_per_step=2, rollouts_per_group=2, eval_every=0)
    await wait_for(client, started["run_id"], finished)
    read = await client.read_resource(started["log"])
    log = json.loads(read.contents[0].text)
    assert (log["run_id"], log["state"], [s["step"] for s in log["steps"]]) == (started["run_id"], "completed", [1, 2])
