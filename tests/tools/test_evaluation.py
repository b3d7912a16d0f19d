"""The evaluate tool through the protocol: every skill scored, base model and checkpoints side by side."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.support.calls import call
from tests.support.labelled import as_box, detect_dataset, write_jsonl
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio


async def test_evaluate_reports_progress_and_scores_every_skill(client: Client, workdir: Path) -> None:
    save(canvas((160, 120), [("red", (0.25, 0.25, 0.5, 0.75))]), workdir / "red.png")
    path = write_jsonl(
        workdir / "mixed.jsonl",
        [
            {"image": "red.png", "skill": "detect", "object": "red", "boxes": [as_box((0.25, 0.25, 0.5, 0.75))]},
            {"image": "red.png", "skill": "point", "object": "red", "boxes": [as_box((0.25, 0.25, 0.5, 0.75))]},
            {"image": "red.png", "skill": "query", "question": "How many red shapes?", "answer": "one"},
            {"image": "red.png", "skill": "query", "question": "How many red shapes?", "answer": "two"},
        ],
    )
    seen: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total))

    with anyio.fail_after(30):
        result = await client.call_tool(
            "evaluate",
            {"dataset": str(path), "split": "all", "output": str(workdir / "scores.jsonl")},
            progress_callback=progress,
        )
    assert not result.is_error, result.content[0].text
    [base] = result.structured_content["models"]
    assert base["detect"] == {"examples": 1, "mean_iou": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}
    assert base["point"] == {"examples": 1, "hit_rate": 1.0}
    assert base["query"] == {"examples": 2, "accuracy": 0.5}
    assert base["score"] == pytest.approx(0.75)  # the mean of the four examples: 1, 1, 1, 0
    assert seen[-1] == (4, 4) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    lines = [json.loads(line) for line in (workdir / "scores.jsonl").read_text().splitlines()]
    assert sorted(line["line"] for line in lines) == [1, 2, 3, 4]


async def test_evaluating_an_unknown_checkpoint_reports_its_errors_beside_the_base_model(
    client: Client, workdir: Path
) -> None:
    dataset = detect_dataset(workdir, count=3)
    report = await call(
        client,
        "evaluate",
        dataset=str(dataset),
        split="all",
        models=["moondream3-preview/01NOSUCHFINETUNE0000000000@3"],
    )
    base, unknown = report["models"]
    assert base["examples"] == 3 and base["errors"] == 0
    assert unknown["examples"] == 0 and unknown["errors"] == 3 and unknown["score"] is None
    assert unknown["first_error"]
