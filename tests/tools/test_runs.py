"""Training runs through the protocol, against the emulator's learning dynamic: rise, save, stop, resume."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from statistics import mean

import anyio
import pytest
from mcp import Client
from PIL import Image

from moondream_mcp import training
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal, unique
from tests.support.labelled import as_box, detect_dataset, query_dataset, write_jsonl
from tests.support.pictures import canvas, save
from tests.support.watching import applied, finished, run_to_the_end, start_run, wait_for

pytestmark = pytest.mark.anyio


async def test_a_run_raises_reward_keeps_its_best_checkpoint_and_that_beats_the_base_model(
    client: Client, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir)
    started = await start_run(
        client, dataset, rank=8, steps=8, groups_per_step=8, rollouts_per_group=4, lr=0.002, eval_every=4
    )
    assert (started["state"], started["train_examples"], started["eval_examples"]) == ("running", 8, 2)
    status = await wait_for(client, started["run_id"], finished)

    assert (status["state"], status["step"], status["last_error"]) == ("completed", 8, None)
    assert [s["api_step"] for s in status["steps"]] == list(range(1, 9))
    assert applied(emulator, started["finetune_id"]) == list(range(1, 9))
    rewards = [s["reward_mean"] for s in status["steps"]]
    assert mean(rewards[-3:]) > mean(rewards[:3]) + 0.1, rewards
    assert [e["step"] for e in status["evals"]] == [4, 8]
    best = next(c for c in status["checkpoints"] if c["best"])
    assert status["best_model"] == best["model"] == f"moondream3-preview/{started['finetune_id']}@{best['api_step']}"
    assert status["last_model"].endswith("@8")
    # Only the checkpoints the policy keeps are left saved on the API.
    listed = await call(client, "list_checkpoints", finetune_id=started["finetune_id"])
    assert [c["model"] for c in listed["checkpoints"]] == [c["model"] for c in status["checkpoints"]]

    report = await call(client, "evaluate", dataset=str(dataset), models=[status["best_model"]], split="all")
    base, tuned = report["models"]
    assert (base["model"], tuned["model"]) == ("moondream3-preview", status["best_model"])
    assert tuned["detect"]["mean_iou"] > base["detect"]["mean_iou"] + 0.1, report["models"]
    assert report["best_model"] == status["best_model"]
    lines = [json.loads(line) for line in Path(report["output"]).read_text().splitlines()]
    assert len(lines) == 20 and {line["model"] for line in lines} == {base["model"], tuned["model"]}


async def test_training_status_draws_reward_and_eval_curves_as_a_png(client: Client, workdir: Path) -> None:
    dataset = detect_dataset(workdir, count=4)
    started, _ = await run_to_the_end(client, dataset, steps=2, groups_per_step=2, rollouts_per_group=2, eval_every=1)
    result = await client.call_tool("training_status", {"run_id": started["run_id"], "chart": True})
    assert not result.is_error
    assert [c.type for c in result.content] == ["text", "image", "resource_link"]
    assert result.content[1].mime_type == "image/png"
    png = base64.b64decode(result.content[1].data)
    with Image.open(io.BytesIO(png)) as chart:
        assert chart.format == "PNG" and chart.size == (700, 360)
    assert json.loads(result.content[0].text) == result.structured_content
    assert Path(result.structured_content["picture"]).read_bytes() == png
    (saved,) = (await client.read_resource(result.content[2].uri)).contents
    assert (saved.mime_type, base64.b64decode(saved.blob)) == ("image/png", png)


async def test_stop_training_ends_the_run_after_the_current_step_and_keeps_its_last_checkpoint(
    client: Client, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(0.05, times=10_000, path="/rollouts")  # slow enough to stop mid-run
    started = await start_run(client, dataset, steps=50, groups_per_step=2, rollouts_per_group=2, eval_every=0)
    await wait_for(client, started["run_id"], lambda s: s["step"] >= 1)
    summary = await call(client, "stop_training", run_id=started["run_id"])
    assert summary["state"] in ("running", "stopped")
    status = await wait_for(client, started["run_id"], finished)
    assert status["state"] == "stopped" and 1 <= status["step"] < 50
    assert applied(emulator, started["finetune_id"]) == list(range(1, status["step"] + 1))
    assert status["last_model"].endswith(f"@{status['step']}")
    runs = await call(client, "list_runs", state="stopped")
    assert started["run_id"] in [r["run_id"] for r in runs["runs"]]


async def test_a_step_whose_answer_timed_out_is_recorded_once_and_never_applied_again(
    settings: Settings, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(2.5, path="/train_step")  # step 1 is applied; its answer comes too late
    async with Client(build_server(settings.model_copy(update={"timeout": 1.0, "train_timeout": 1.0}))) as client:
        started, status = await run_to_the_end(
            client, dataset, steps=3, groups_per_step=2, rollouts_per_group=2, eval_every=0
        )
    assert status["state"] == "completed"
    assert applied(emulator, started["finetune_id"]) == [1, 2, 3]
    assert [(s["api_step"], s["seconds"] is None) for s in status["steps"]] == [(1, True), (2, False), (3, False)]


async def test_a_run_waits_for_steps_slower_than_the_request_timeout_and_sends_the_default_lr(
    settings: Settings, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.config.train_step_seconds = 1.5
    try:
        async with Client(build_server(settings.model_copy(update={"timeout": 1.0, "train_timeout": 30.0}))) as client:
            started, status = await run_to_the_end(
                client, dataset, steps=2, groups_per_step=1, rollouts_per_group=2, eval_every=0
            )
    finally:
        emulator.emulator.config.train_step_seconds = 0.0
    assert status["state"] == "completed", status
    assert applied(emulator, started["finetune_id"]) == [1, 2]
    # Answered, not recovered: a recovered step has no duration.
    assert [(s["api_step"], s["seconds"] is not None) for s in status["steps"]] == [(1, True), (2, True)]
    sent = [json.loads(r.body_text or "") for r in emulator.emulator.requests if r.path.endswith("/train_step")]
    assert [body["lr"] for body in sent] == [2e-4, 2e-4]


async def test_a_step_refused_with_503_is_redone_exactly_once(client: Client, workdir: Path, emulator) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject(503, path="/train_step")
    started, status = await run_to_the_end(
        client, dataset, steps=3, groups_per_step=2, rollouts_per_group=2, eval_every=0
    )
    assert status["state"] == "completed"
    assert applied(emulator, started["finetune_id"]) == [1, 2, 3]
    assert len([r for r in emulator.emulator.requests if r.path.endswith("/train_step")]) == 4


async def test_a_run_the_api_refuses_fails_with_the_reason(client: Client, workdir: Path, emulator) -> None:
    dataset = detect_dataset(workdir, count=3)
    emulator.emulator.inject(400, path="/rollouts", times=100)
    started, status = await run_to_the_end(
        client, dataset, steps=3, groups_per_step=2, rollouts_per_group=2, eval_every=0
    )
    assert (status["state"], status["step"]) == ("failed", 0)
    assert status["last_error"].startswith("the Moondream API refused the request (HTTP 400)")
    assert not applied(emulator, started["finetune_id"])


async def test_a_run_interrupted_by_a_server_shutdown_resumes_on_the_next_start(
    settings: Settings, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(0.2, times=10_000, path="/rollouts")  # ~0.2 s a step
    async with Client(build_server(settings)) as first:
        started = await start_run(first, dataset, steps=6, groups_per_step=2, rollouts_per_group=2, eval_every=3)
        midway = await wait_for(first, started["run_id"], lambda s: s["step"] >= 2)
    assert midway["state"] == "running" and midway["step"] < 6
    async with Client(build_server(settings)) as second:
        status = await wait_for(second, started["run_id"], finished)
    assert (status["state"], status["step"]) == ("completed", 6)
    assert applied(emulator, started["finetune_id"]) == list(range(1, 7))
    assert [e["step"] for e in status["evals"]] == [3, 6]


async def test_a_query_run_rewards_each_rollout_by_the_label_match_rule(
    client: Client, workdir: Path, emulator
) -> None:
    dataset = query_dataset(workdir)
    _, status = await run_to_the_end(client, dataset, steps=2, groups_per_step=4, rollouts_per_group=4, eval_every=2)
    assert status["state"] == "completed"
    groups = [g for s in emulator.emulator.train_steps for g in s.groups]
    assert len(groups) == 8
    for group in groups:
        # Every picture has orange squares; a rollout that mistakes orange for yellow counts "0". The labels
        # are number words ("two"), so only the normalized rule makes the digit answers right.
        answers = [r["output"]["answer"] for r in group["rollouts"]]
        assert group["rewards"] == [0.0 if a == "0" else 1.0 for a in answers], answers
    assert any(0.0 in g["rewards"] for g in groups) and any(1.0 in g["rewards"] for g in groups)
    assert status["evals"][0]["metrics"]["query"]["examples"] >= 1


async def test_one_step_mixes_detect_point_and_query_groups(client: Client, workdir: Path, emulator) -> None:
    purple = (0.25, 0.25, 0.6, 0.75)
    save(canvas((160, 120), [("purple", purple)]), workdir / "purple.png")
    path = write_jsonl(
        workdir / "mixed.jsonl",
        [
            {"image": "purple.png", "skill": "detect", "object": "purple", "boxes": [as_box(purple)], "split": "train"},
            {"image": "purple.png", "skill": "point", "object": "purple", "points": [[0.425, 0.5]], "split": "train"},
            {
                "image": "purple.png",
                "skill": "query",
                "question": "How many purple shapes?",
                "answer": "1",
                "split": "train",
            },
        ],
    )
    started, status = await run_to_the_end(client, path, steps=1, groups_per_step=3, rollouts_per_group=2, eval_every=0)
    assert (status["state"], status["step"], started["eval_examples"]) == ("completed", 1, 0)
    [step] = emulator.emulator.train_steps
    assert sorted(g["request"]["skill"] for g in step.groups) == ["detect", "point", "query"]
    truths = [
        r.json["ground_truth"]
        for r in emulator.emulator.requests
        if r.path.endswith("/rollouts") and "ground_truth" in r.json
    ]
    assert sorted(truths, key=json.dumps) == [{"boxes": [as_box(purple)]}, {"points": [{"x": 0.425, "y": 0.5}]}]


async def test_a_second_run_on_a_busy_finetune_is_refused(client: Client, workdir: Path, emulator) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(0.05, times=10_000, path="/rollouts")
    started = await start_run(client, dataset, steps=20, groups_per_step=2, rollouts_per_group=2, eval_every=0)
    text = await refusal(client, "start_training", dataset=str(dataset), finetune_id=started["finetune_id"])
    assert "already training" in text and started["run_id"] in text
    await call(client, "stop_training", run_id=started["run_id"])
    await wait_for(client, started["run_id"], finished)


# ---- one driver per run ---------------------------------------------------------------------------


async def test_two_servers_sharing_a_data_dir_apply_each_step_of_a_run_once(
    settings: Settings, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(0.1, times=10_000, path="/rollouts")
    async with Client(build_server(settings)) as first:
        started = await start_run(first, dataset, steps=4, groups_per_step=2, rollouts_per_group=2, eval_every=2)
        # A second server on the same data directory finds the run "running": it must leave it to its driver.
        async with Client(build_server(settings)):
            status = await wait_for(first, started["run_id"], finished)
    assert (status["state"], status["step"]) == ("completed", 4)
    assert applied(emulator, started["finetune_id"]) == [1, 2, 3, 4]
    assert [e["step"] for e in status["evals"]] == [2, 4]


async def test_a_run_whose_driver_has_gone_is_taken_over_by_the_server_still_running(
    settings: Settings, workdir: Path, emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "ADOPT_SECONDS", 0.05)
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(0.2, times=10_000, path="/rollouts")
    async with Client(build_server(settings)) as second:
        async with Client(build_server(settings)) as first:
            started = await start_run(first, dataset, steps=6, groups_per_step=2, rollouts_per_group=2, eval_every=0)
            midway = await wait_for(first, started["run_id"], lambda s: s["step"] >= 2)
        assert midway["state"] == "running"
        status = await wait_for(second, started["run_id"], finished)
    assert (status["state"], status["step"]) == ("completed", 6)
    assert applied(emulator, started["finetune_id"]) == list(range(1, 7))


async def test_two_start_training_calls_at_once_on_one_finetune_start_one_run(
    settings: Settings, workdir: Path, emulator
) -> None:
    dataset = detect_dataset(workdir, count=4)
    emulator.emulator.inject_delay(0.05, times=10_000, path="/rollouts")
    name = unique()
    arguments = {
        "dataset": str(dataset),
        "name": name,
        "steps": 20,
        "groups_per_step": 2,
        "rollouts_per_group": 2,
        "eval_every": 0,
    }
    results = []
    async with Client(build_server(settings)) as one, Client(build_server(settings)) as other:
        async with anyio.create_task_group() as tasks:
            for client in (one, one, other, other):

                async def start(client: Client = client) -> None:
                    results.append(await client.call_tool("start_training", arguments))

                tasks.start_soon(start)
        [started] = [r.structured_content for r in results if not r.is_error]
        refused = [r.content[0].text for r in results if r.is_error]
        await call(one, "stop_training", run_id=started["run_id"])
        await wait_for(one, started["run_id"], finished)
    assert (
        refused
        == [
            f"Error executing tool start_training: finetune {started['finetune_id']} is already training in run "
            f"{started['run_id']}; stop it (stop_training) or wait for it to finish"
        ]
        * 3
    )
