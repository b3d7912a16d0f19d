"""The whole path the finetune-detector prompt walks, through the protocol: a folder of unlabelled photos,
labelled, reviewed and fixed like a person would, exported, a baseline, a run, and a checkpoint that beats
the base model on the eval split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mcp import Client

from moondream_mcp.scoring import iou
from tests.support.calls import call, unique
from tests.support.pictures import canvas, save
from tests.support.watching import finished, start_run, wait_for

pytestmark = pytest.mark.anyio

SIZE = (160, 120)


def photos(folder: Path, count: int) -> dict[str, tuple[float, float, float, float]]:
    """Drone-ish shots: one orange panel each (a colour the base model misplaces), a blue roof in some."""
    folder.mkdir()
    rng = random.Random(11)
    truth = {}
    for i in range(count):
        x0, y0 = rng.randrange(8, 60), rng.randrange(6, 40)
        panel = (
            x0 / SIZE[0],
            y0 / SIZE[1],
            (x0 + rng.randrange(40, 70)) / SIZE[0],
            (y0 + rng.randrange(30, 60)) / SIZE[1],
        )
        shapes = [("orange", panel)] + ([("blue", (0.8, 0.75, 0.95, 0.95))] if i % 3 == 0 else [])
        save(canvas(SIZE, shapes), folder / f"shot-{i:02d}.png")
        truth[f"shot-{i:02d}.png"] = panel
    return truth


async def test_from_unlabelled_photos_to_a_checkpoint_that_beats_the_base_model(
    client: Client, workdir: Path, emulator
) -> None:
    folder = workdir / "drone"
    truth = photos(folder, 15)
    guide = await client.get_prompt("finetune-detector", {"photos": str(folder), "classes": "orange panel"})
    text = guide.messages[0].content.text
    path = ["label_images", "review_labels", "fix_labels", "export_dataset", "evaluate", "start_training"]
    assert [text.index(step) for step in path] == sorted(text.index(step) for step in path)
    dataset = folder / "labels.jsonl"
    assert f'output="{dataset}"' in text and '["orange panel"]' in text

    labelled = await call(client, "label_images", images=str(folder), classes=["orange panel"], output=str(dataset))
    assert (labelled["labelled"], labelled["examples"]) == (15, 15)

    # Review as a person would: look at each sheet, accept what is right, redraw what is not.
    replaced = 0
    while True:
        result = await client.call_tool("review_labels", {"dataset": str(dataset), "unreviewed": True, "per_page": 12})
        assert not result.is_error
        page = result.structured_content
        if not page["cells"]:
            break
        assert [c.type for c in result.content].count("image") == len(page["sheets"]) == 1
        right, fixes = [], []
        for cell in page["cells"]:
            panel = truth[Path(cell["image"]).name]
            if len(cell["labels"]) == 1 and iou(tuple(cell["labels"][0]), panel) > 0.95:
                right.append(cell["line"])
            else:
                fixes.append({"lines": [cell["line"]], "action": "replace", "boxes": [list(panel)]})
        replaced += len(fixes)
        fixes += [{"lines": right, "action": "accept"}] if right else []
        await call(client, "fix_labels", dataset=str(dataset), fixes=fixes)
    assert replaced > 0, "the base model misplaces orange: a careful review redraws some boxes"

    report = await call(client, "inspect_dataset", path=str(dataset))
    assert report["ready"] and report["examples"] == 15
    exported = await call(
        client, "export_dataset", dataset=str(dataset), format="yolo", output=str(workdir / "yolo"), images="link"
    )
    assert exported["images"] == 15 and exported["splits"]["eval"] == 3

    baseline = await call(client, "evaluate", dataset=str(dataset))
    started = await start_run(
        client,
        dataset,
        name=unique("panels"),
        mode="auto",
        sft_below=baseline["models"][0]["score"] + 0.02,  # the labels first (SFT), then RL once it helps
        steps=8,
        groups_per_step=8,
        rollouts_per_group=4,
        lr=0.002,
        eval_every=4,
    )
    assert started["calls"]["train_steps"] == 8 and started["eval_examples"] == 3
    status = await wait_for(client, started["run_id"], finished)
    assert status["state"] == "completed", status["last_error"]
    assert status["best_model"] and status["steps"][0]["mode"] == "sft"

    compared = await call(client, "evaluate", dataset=str(dataset), models=[status["best_model"]])
    base, tuned = compared["models"]
    assert base["score"] == baseline["models"][0]["score"]
    assert tuned["score"] > base["score"] + 0.05, compared["models"]
    found = await call(client, "detect", image=str(folder / "shot-00.png"), object="orange panel", model=tuned["model"])
    assert found["count"] == 1
