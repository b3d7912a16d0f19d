"""The batch tool against a rate-limited, slow emulator, printed as ratios from one run. Not a test.

100 images; the emulator answers after 200 ms and allows 10 requests/s per key (429 above it).
    batch tool:                achieved requests/s ÷ limit   [target >= 0.95, zero 429s surfaced]
    one tool call at a time:   achieved requests/s ÷ limit   (what an agent gets without the batch tool)

And submit_batch (the Batch API path) over 200 grainy 1 MP photos: the upload file is written to disk
line by line and sent in 1 MB parts, so the peak memory traced while preparing and uploading stays a
small fraction of the file, however many photos there are.

Run: .venv/bin/python benchmarks/bench_batch.py
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path

import anyio
from harness import KEY, serving, settings
from mcp import Client
from PIL import Image, ImageDraw

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_mcp.server import build_server

IMAGES = 100
LIMIT = 10.0
LATENCY = 0.2


def make_images(folder: Path) -> list[str]:
    folder.mkdir()
    paths = []
    for i in range(IMAGES):
        image = Image.new("RGB", (320, 240), "white")
        ImageDraw.Draw(image).rectangle([10 + i, 40, 90 + i, 120], fill="red")
        path = folder / f"frame{i:03}.png"
        image.save(path)
        paths.append(str(path))
    return paths


async def run(workdir: Path) -> None:
    paths = make_images(workdir / "frames")
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY}), latency=LATENCY, rate_limit=LIMIT))
    async with serving(emulator, workdir, rate_limit=LIMIT) as client:
        start = time.perf_counter()
        result = await client.call_tool(
            "batch", {"skill": "detect", "images": str(workdir / "frames"), "object": "red"}
        )
        batch_time = time.perf_counter() - start
        summary = result.structured_content
        batch_429 = sum(r.status == 429 for r in emulator.requests)
        surfaced = summary["failed"]

        emulator.clear()
        start = time.perf_counter()
        errors = 0
        for path in paths:
            one = await client.call_tool("detect", {"image": path, "object": "red"})
            errors += one.is_error
        single_time = time.perf_counter() - start

    batch_rate = IMAGES / batch_time
    single_rate = IMAGES / single_time
    print(f"{IMAGES} images, emulator latency {LATENCY * 1000:.0f} ms, limit {LIMIT:g} req/s")
    print(
        f"  batch tool        {batch_time:6.2f} s  {batch_rate:5.2f} req/s = {batch_rate / LIMIT:4.2f} x limit"
        f"   429s at the API {batch_429}, surfaced {surfaced}   [target >= 0.95, 0 surfaced]"
    )
    print(
        f"  one at a time     {single_time:6.2f} s  {single_rate:5.2f} req/s = {single_rate / LIMIT:4.2f} x limit"
        f"   errors {errors}"
    )
    print(f"  batch speed-up    {single_time / batch_time:4.2f}x")


async def run_submit(workdir: Path) -> None:
    folder = workdir / "many"
    folder.mkdir()
    for i in range(200):
        # Grain makes each JPEG a few hundred kB, like a photo's.
        Image.effect_noise((1200, 900), 60).convert("RGB").save(folder / f"photo{i:03}.jpg", quality=90)
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY})))
    emulator.hold_batches = True  # measure the upload, not the emulator's processing
    with running_emulator(emulator) as running:
        configured = settings(running.url, workdir, batch_part_bytes=5 * 1024 * 1024)  # the least the storage takes
        async with Client(build_server(configured)) as client:
            tracemalloc.start()
            start = time.perf_counter()
            result = await client.call_tool("submit_batch", {"skill": "detect", "images": str(folder), "object": "red"})
            elapsed = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        emulator.release_batches()
    out = result.structured_content
    print(
        f"submit_batch, {out['lines']} lines, {out['bytes'] / 1e6:.1f} MB file in {out['parts']} parts, {elapsed:.1f} s"
    )
    print(
        f"  peak traced memory {peak / 1e6:5.1f} MB = {peak / out['bytes']:4.2f} x the file "
        "(emulator included: it shares the process)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(run, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(run_submit, Path(tmp))


if __name__ == "__main__":
    main()
