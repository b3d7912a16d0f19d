"""Many images at scale: the achieved rate against a slow, rate-limited API, and memory per image. Not a test.

1. A slow API: the emulator answers after 1 s and allows 10 requests/s per key (429 above it); the
   client is told the limit. 300 images through local batches, side by side:
       fixed pool of IN_FLIGHT workers (what batch did before)   achieved req/s ÷ limit
       pacing (in flight ≈ rate × latency, bounded)               achieved req/s ÷ limit   [target >= 0.95]
   The achieved rate is the API's: requests answered 200 per second between the first and the last.
2. No rate limit configured, the emulator allowing 10 requests/s: 429s at the API, and surfaced  [target 0].
3. 1k images through the batch tool against the emulator (tiny images, no latency); then 10k and 100k
   with a synthetic skill (a shared limiter of 5,000 requests/s and 20 ms latency, no image work), for
   the memory of the run itself: peak traced memory and bytes per image  [target: flat, not ~8 kB/image].

Run: .venv/bin/python benchmarks/bench_scale.py
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

import anyio
from aiolimiter import AsyncLimiter
from harness import KEY, serving
from PIL import Image

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_mcp import local_batch
from moondream_mcp.client import MoondreamClient
from moondream_mcp.config import IN_FLIGHT
from moondream_mcp.failures import Explainer
from moondream_mcp.files import FileGuard
from moondream_mcp.images import ImageLoader
from moondream_mcp.jsonl import LineWriter
from moondream_mcp.vision import Vision

LIMIT = 10.0
LATENCY = 1.0
SLOW_IMAGES = 300


def make_images(folder: Path, count: int, size: tuple[int, int] = (64, 48)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i:06}.png"
        Image.new("RGB", size, (i % 256, 0, 0)).save(path)
        paths.append(str(path))
    return paths


def api_rate(emulator: Emulator) -> float:
    answered = sorted(r.at for r in emulator.requests if r.status == 200)
    return (len(answered) - 1) / (answered[-1] - answered[0])


async def slow_api(workdir: Path) -> None:
    refs = make_images(workdir / "slow", SLOW_IMAGES)
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY}), latency=LATENCY, rate_limit=LIMIT))
    print(f"1. {SLOW_IMAGES} images, emulator latency {LATENCY:g} s, limit {LIMIT:g} req/s (told to the client)")
    with running_emulator(emulator) as running:
        for name, pacing in (("fixed pool", False), ("pacing", True)):
            emulator.clear()
            async with (
                MoondreamClient(endpoint=running.url, api_key=KEY, rate_limit=LIMIT) as client,
                ImageLoader(allowed_dirs=[workdir]) as images,
            ):
                job = local_batch.SkillJob(skill="point", object="red")
                vision = Vision(client, images)

                async def work(ref: str, job: local_batch.SkillJob = job, vision: Vision = vision) -> dict:
                    return await job.run(vision, ref)

                start = time.perf_counter()
                outcome = await local_batch.run(
                    refs,
                    work,
                    local_batch.ResultLog(_lines(workdir, f"{name}.jsonl", job.id)),
                    explain=Explainer(endpoint=running.url, secrets=(KEY,)),
                    concurrency=client.api.in_flight if pacing else IN_FLIGHT,
                )
                elapsed = time.perf_counter() - start
                in_flight = client.api.in_flight()
            rate = api_rate(emulator)
            throttled = sum(r.status == 429 for r in emulator.requests)
            print(
                f"   {name:10}  {rate:5.2f} req/s = {rate / LIMIT:4.2f} x limit   whole run {elapsed:5.1f} s"
                f" ({SLOW_IMAGES / elapsed:5.2f} images/s)   in flight {in_flight if pacing else IN_FLIGHT:2}"
                f"   429s at the API {throttled}, surfaced {outcome.failed}"
            )


def _lines(workdir: Path, name: str, job: str) -> LineWriter:
    """A new JSONL file claimed by `job`, as the batch tool claims its output."""
    return LineWriter.claim(FileGuard([workdir], 1 << 20).open_output(str(workdir / name)), job, "resume", tool="bench")


async def no_limit_configured(workdir: Path) -> None:
    refs = make_images(workdir / "unpaced", 200)
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY}), latency=0.05, rate_limit=LIMIT))
    async with serving(emulator, workdir) as client:
        start = time.perf_counter()
        result = await client.call_tool("batch", {"skill": "point", "images": refs, "object": "red"})
        elapsed = time.perf_counter() - start
    out = result.structured_content
    throttled = sum(r.status == 429 for r in emulator.requests)
    print(f"2. 200 images, no rate limit configured, the emulator allowing {LIMIT:g} req/s, {elapsed:.1f} s")
    print(
        f"   succeeded {out['succeeded']}, 429s at the API {throttled}, surfaced {out['failed']}   [target 0 surfaced]"
    )


async def thousand_through_the_tool(workdir: Path) -> None:
    refs = make_images(workdir / "k", 1000)
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY})))
    async with serving(emulator, workdir) as client:
        tracemalloc.start()
        start = time.perf_counter()
        result = await client.call_tool("batch", {"skill": "point", "images": str(workdir / "k"), "object": "red"})
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    out = result.structured_content
    print("3. scale")
    print(
        f"   {len(refs):>7} images, batch tool + emulator (same process)  {out['succeeded'] / elapsed:7.1f} images/s"
        f"   peak traced {peak / 1e6:6.1f} MB"
    )


async def synthetic(workdir: Path, count: int) -> None:
    refs = [f"/photos/img{i:06}.jpg" for i in range(count)]
    limiter = AsyncLimiter(1, 1 / 5000)

    async def work(ref: str) -> dict:
        await limiter.acquire()
        await anyio.sleep(0.02)
        return {"points": [{"x": 0.5, "y": 0.5}], "count": 1}

    tracemalloc.start()
    start = time.perf_counter()
    outcome = await local_batch.run(
        refs,
        work,
        local_batch.ResultLog(_lines(workdir, f"synthetic-{count}.jsonl", "synthetic")),
        explain=str,
        concurrency=lambda: int(5000 * 0.02 * 1.25) + 1,  # what pacing would ask for
    )
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"   {count:>7} images, synthetic skill at 5000 req/s           {outcome.succeeded / elapsed:7.1f} images/s"
        f"   peak traced {peak / 1e6:6.1f} MB = {peak / count:7.1f} bytes/image"
    )


def main() -> None:
    for step in (slow_api, no_limit_configured, thousand_through_the_tool):
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(step, Path(tmp))
    for count in (10_000, 100_000):
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(synthetic, Path(tmp), count)


if __name__ == "__main__":
    main()
