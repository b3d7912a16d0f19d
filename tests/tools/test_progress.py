"""Waits longer than a moment send progress regularly, so clients that reset their timeouts on it keep waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import BOUND, call, unique
from tests.support.labelled import detect_dataset
from tests.support.pictures import canvas, save
from tests.support.watching import start_run

pytestmark = pytest.mark.anyio

EVERY = 0.05


class Notes:
    """The progress notifications of one call."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((progress, total, message))

    def assert_increasing(self) -> None:
        values = [p for p, _, _ in self.seen]
        assert values == sorted(values) and len(set(values)) == len(values), values


@pytest.fixture
async def beating(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings.model_copy(update={"progress_every": EVERY}))) as client:
        yield client


async def test_a_slow_train_step_sends_progress_while_it_waits(beating: Client, workdir: Path, emulator) -> None:
    finetune = await call(beating, "create_finetune", name=unique(), rank=8)
    emulator.emulator.inject_delay(1.0, path="/train_step")
    target = {"boxes": [{"x_min": 0.25, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6}]}
    groups = [{"skill": "detect", "image": save(canvas(), workdir / "a.png"), "object": "red", "target": target}]
    notes = Notes()
    with anyio.fail_after(BOUND):
        result = await beating.call_tool(
            "train_step", {"finetune_id": finetune["finetune_id"], "groups": groups}, progress_callback=notes
        )

    assert not result.is_error and result.structured_content["step"] == 1
    assert len(notes.seen) >= 3, notes.seen
    assert all(m and m.startswith("waiting for the train step (") for _, _, m in notes.seen)
    notes.assert_increasing()


async def test_waiting_for_a_training_run_sends_progress_until_the_wait_ends(
    beating: Client, workdir: Path, emulator
) -> None:
    emulator.emulator.inject_delay(30, times=100, path="/rollouts")  # no step gets recorded during the wait
    started = await start_run(beating, detect_dataset(workdir, count=4), steps=2, eval_every=0)
    notes = Notes()
    with anyio.fail_after(BOUND):
        result = await beating.call_tool(
            "training_status", {"run_id": started["run_id"], "wait_seconds": 0.6}, progress_callback=notes
        )
    await call(beating, "stop_training", run_id=started["run_id"])

    assert result.structured_content["step"] == 0
    assert len(notes.seen) >= 3, notes.seen
    assert all(f"waiting for run {started['run_id']}" in (m or "") for _, _, m in notes.seen)
    notes.assert_increasing()


async def test_waiting_for_a_batch_sends_progress_while_the_job_is_held(
    beating: Client, workdir: Path, emulator
) -> None:
    images = [save(canvas(), workdir / f"{i}.png") for i in range(2)]
    emulator.emulator.hold_batches = True
    try:
        submitted = await call(beating, "submit_batch", skill="caption", images=images)
        notes = Notes()
        with anyio.fail_after(BOUND):
            result = await beating.call_tool(
                "batch_results",
                {"batch_id": submitted["batch_id"], "output": str(workdir / "out.jsonl"), "wait_seconds": 0.6},
                progress_callback=notes,
            )
    finally:
        emulator.emulator.hold_batches = False
        emulator.emulator.release_batches()

    assert result.is_error and "still" in result.content[0].text
    assert len(notes.seen) >= 3, notes.seen
    notes.assert_increasing()
