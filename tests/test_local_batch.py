"""local_batch.run: workers pull images from one iterator, as many as the pacing asks for at each moment."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from moondream_mcp.files import FileGuard
from moondream_mcp.jsonl import LineWriter
from moondream_mcp.local_batch import ResultLog, run

pytestmark = pytest.mark.anyio


def lines(folder: Path, name: str) -> LineWriter:
    return LineWriter.claim(FileGuard([folder], 1 << 20).open_output(str(folder / name)), "j", "resume", tool="test")


async def test_workers_follow_a_concurrency_that_rises_and_falls(tmp_path: Path) -> None:
    done = 0
    active = 0
    peaks: dict[str, int] = {"low": 0, "high": 0, "falling": 0, "low again": 0}

    def phase() -> str:
        return "low" if done < 20 else "high" if done < 50 else "falling" if done < 65 else "low again"

    def wanted() -> int:
        return {"low": 3, "high": 12, "falling": 2, "low again": 2}[phase()]

    async def work(ref: str) -> dict:
        nonlocal active, done
        active += 1
        peaks[phase()] = max(peaks[phase()], active)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        active -= 1
        done += 1
        return {"ref": ref}

    with anyio.fail_after(30):
        outcome = await run(
            [f"/img{i}.png" for i in range(80)],
            work,
            ResultLog(lines(tmp_path, "out.jsonl")),
            explain=str,
            concurrency=wanted,
        )

    assert outcome.succeeded == 80
    assert peaks["low"] <= 3
    assert 3 < peaks["high"] <= 12
    # Workers leave as each finishes its image: once each has finished one, only two are left.
    assert peaks["low again"] <= 2
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 80


async def test_a_fixed_concurrency_is_never_exceeded(tmp_path: Path) -> None:
    active = peak = 0

    async def work(ref: str) -> dict:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.lowlevel.checkpoint()
        active -= 1
        return {}

    with anyio.fail_after(30):
        outcome = await run(
            [f"/img{i}.png" for i in range(500)],
            work,
            ResultLog(lines(tmp_path, "o.jsonl")),
            explain=str,
            concurrency=4,
        )

    assert (outcome.succeeded, peak) == (500, 4)
