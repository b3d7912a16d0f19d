"""Training runs in SFT and auto mode through the protocol: labels as targets, the switch to RL, the cost
told before the run, and the exactly-once journal kept for SFT steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal, unique
from tests.support.labelled import detect_dataset, query_dataset, write_jsonl
from tests.support.watching import applied, finished, run_to_the_end, start_run, wait_for

pytestmark = pytest.mark.anyio


async def test_an_sft_run_trains_on_the_labels_without_rollouts_and_records_its_mode(
    client: Client, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=5)
    labels = {line["image"]: line["boxes"] for line in map(json.loads, dataset.read_text().splitlines())}
    started = await start_run(client, dataset, mode="sft", steps=3, groups_per_step=2, eval_every=0)
    assert started["calls"] == {
        "rollouts": 0,
        "rollouts_at_least": 0,
        "train_steps": 3,
        "evaluation": 0,
        "checkpoints": 2,
        "total": 5,
    }
    status = await wait_for(client, started["run_id"], finished)
    assert (status["state"], [s["mode"] for s in status["steps"]]) == ("completed", ["sft"] * 3)
    assert [s["reward_mean"] for s in status["steps"]] == [None] * 3
    assert applied(emulator, started["finetune_id"]) == [1, 2, 3]
    assert not [r for r in emulator.emulator.requests if r.path.endswith("/rollouts")]
    groups = [g for s in emulator.emulator.train_steps for g in s.groups]
    assert len(groups) == 6 and {g["mode"] for g in groups} == {"sft"}
    for group in groups:
        assert group["request"]["skill"] == "detect" and group["request"]["object"] == "orange panel"
        assert group["target"]["boxes"] in list(labels.values())


async def test_sft_targets_of_point_and_query_examples_are_their_labels(
    client: Client, workdir: Path, emulator
) -> None:
    query_dataset(workdir, count=3)
    path = write_jsonl(
        workdir / "mixed.jsonl",
        [
            *(dict(json.loads(line), split="train") for line in (workdir / "counts.jsonl").read_text().splitlines()),
            {"image": "count-5-0.png", "skill": "point", "object": "orange", "points": [[0.15, 0.3]], "split": "train"},
        ],
    )
    await run_to_the_end(client, path, mode="sft", steps=1, groups_per_step=8, eval_every=0)
    [step] = emulator.emulator.train_steps[-1:]
    targets = {g["request"]["skill"]: g["target"] for g in step.groups}
    assert targets["point"] == {"points": [{"x": 0.15, "y": 0.3}]}
    assert targets["query"]["answer"] in ("one", "two", "three")
    assert all(g["request"].get("reasoning") is False for g in step.groups if g["request"]["skill"] == "query")


async def test_auto_trains_with_sft_while_the_eval_score_is_below_the_threshold_then_with_rl(
    client: Client, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=10)
    base = await call(client, "evaluate", dataset=str(dataset))
    threshold = base["models"][0]["score"] + 0.005
    started = await start_run(
        client,
        dataset,
        mode="auto",
        sft_below=threshold,
        steps=8,
        groups_per_step=4,
        rollouts_per_group=4,
        lr=0.002,
        eval_every=2,
    )
    assert started["calls"]["rollouts"] == 32 and started["calls"]["rollouts_at_least"] == 0
    assert started["calls"]["evaluation"] == 2 * 5  # a baseline and four evaluations of the two eval examples
    status = await wait_for(client, started["run_id"], finished)
    assert status["state"] == "completed", status["last_error"]
    evals = {e["step"]: e["score"] for e in status["evals"]}
    assert evals[0] == pytest.approx(base["models"][0]["score"])
    assert status["evals"][0]["model"] == "moondream3-preview"
    modes = [s["mode"] for s in status["steps"]]
    for step, mode in enumerate(modes, start=1):
        latest = evals[max(s for s in evals if s < step)]
        expected = "rl" if "rl" in modes[: step - 1] or latest >= threshold else "sft"
        assert mode == expected, (step, modes, evals)
    assert modes[0] == "sft" and "rl" in modes, (modes, evals)
    rollouts = [r for r in emulator.emulator.requests if r.path.endswith("/rollouts")]
    assert len(rollouts) == 4 * modes.count("rl")
    assert status["best_model"] != "moondream3-preview"  # the baseline is never the run's best


async def test_a_dry_run_tells_the_calls_and_starts_nothing(client: Client, workdir: Path, emulator) -> None:
    dataset = detect_dataset(workdir, count=10)
    name = unique()
    planned = await start_run(client, dataset, name=name, steps=12, groups_per_step=4, eval_every=5, dry_run=True)
    assert (planned["state"], planned["run_id"]) == ("planned", None)
    # Evaluations after steps 5, 10 and 12, two eval examples each.
    assert planned["calls"] == {
        "rollouts": 48,
        "rollouts_at_least": 48,
        "train_steps": 12,
        "evaluation": 6,
        "checkpoints": 8,
        "total": 74,
    }
    assert not emulator.emulator.requests
    assert name not in [f["name"] for f in (await call(client, "list_finetunes"))["finetunes"]]


async def test_auto_and_sft_are_refused_where_they_cannot_work(client: Client, workdir: Path) -> None:
    dataset = detect_dataset(workdir, count=4)
    text = await refusal(client, "start_training", dataset=str(dataset), name=unique(), mode="auto", eval_every=0)
    assert "eval_every" in text
    save_regex = write_jsonl(
        workdir / "regex.jsonl",
        [
            {
                "image": "orange-3-0.png",
                "skill": "query",
                "question": "Colour?",
                "answer": "orange|red",
                "match": "regex",
            }
        ],
    )
    text = await refusal(client, "start_training", dataset=str(save_regex), name=unique(), mode="sft")
    assert "line 1 gives a regex" in text


async def test_an_sft_step_whose_answer_timed_out_is_recorded_once_as_sft(
    settings: Settings, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(2.5, path="/train_step")  # step 1 is applied; its answer comes too late
    async with Client(build_server(settings.model_copy(update={"timeout": 1.0, "train_timeout": 1.0}))) as client:
        started, status = await run_to_the_end(client, dataset, mode="sft", steps=3, groups_per_step=2, eval_every=0)
    assert status["state"] == "completed"
    assert applied(emulator, started["finetune_id"]) == [1, 2, 3]
    assert [(s["api_step"], s["mode"], s["seconds"] is None) for s in status["steps"]] == [
        (1, "sft", True),
        (2, "sft", False),
        (3, "sft", False),
    ]
