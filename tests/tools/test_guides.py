"""The guided-use prompts and the per-run log resource, through the protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from tests.support.labelled import detect_dataset
from tests.support.watching import run_to_the_end

pytestmark = pytest.mark.anyio


async def test_the_prompts_walk_through_the_loop_and_each_run_has_a_log_resource(client: Client, workdir: Path) -> None:
    prompts = {p.name for p in (await client.list_prompts()).prompts}
    assert {"finetune-detector", "finetune-query"} <= prompts
    guide = await client.get_prompt("finetune-detector", {"dataset": "/data/boxes.jsonl"})
    text = guide.messages[0].content.text
    for tool in ("inspect_dataset", "evaluate", "start_training", "training_status", "model="):
        assert tool in text
    assert text.index("inspect_dataset") < text.index("start_training") < text.index("training_status")

    dataset = detect_dataset(workdir, count=3)
    started, _ = await run_to_the_end(client, dataset, steps=2, groups_per_step=2, rollouts_per_group=2, eval_every=0)
    read = await client.read_resource(started["log"])
    log = json.loads(read.contents[0].text)
    assert (log["run_id"], log["state"], [s["step"] for s in log["steps"]]) == (started["run_id"], "completed", [1, 2])
