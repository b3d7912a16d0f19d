"""Memory of image work under concurrency: 32 calls at once on 60 MB files, printed side by side. Not a test.

Each configuration runs in a fresh process, whose peak resident memory (ru_maxrss) is what is printed:
    unbounded (the old behaviour: every file read at once, two decodes at a time)
    MOONDREAM_MCP_IMAGE_MEMORY_BYTES = 1 GiB (the default) and 256 MiB
[target: the peak follows the budget, not the number of calls]

Run: .venv/bin/python benchmarks/bench_memory.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALLS = 32
FILES = 4
CHILD = """
import resource, sys, time
import anyio
from moondream_mcp.images import ImageLoader

async def main(folder, budget):
    paths = sorted(str(p) for p in __import__("pathlib").Path(folder).glob("*.png"))
    async with ImageLoader(allowed_dirs=[folder], memory_bytes=budget, cache_size=0) as images:
        async with anyio.create_task_group() as tasks:
            for i in range({calls}):
                tasks.start_soon(images.load, paths[i % len(paths)])
        return images.encoded.peak, images.decoding.peak

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
encoded, decoding = anyio.run(main, sys.argv[1], int(sys.argv[2]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak * 1024, base * 1024, time.perf_counter() - start, encoded, decoding)
""".replace("{calls}", str(CALLS))


def make_files(folder: Path) -> int:
    import os

    from PIL import Image

    size = 0
    for i in range(FILES):
        path = folder / f"grain{i}.png"
        # Random pixels do not compress: each file is as large as its pixels, like the 60 MB files of the attack.
        Image.frombytes("RGB", (4500, 4500), os.urandom(4500 * 4500 * 3)).save(path, compress_level=1)
        size = path.stat().st_size
    return size


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        size = make_files(folder)
        print(f"{CALLS} concurrent loads of {FILES} PNG files of {size / 1e6:.0f} MB (20 MP each), peak memory:")
        for name, budget in (("unbounded", 1 << 40), ("1 GiB budget", 1 << 30), ("256 MiB budget", 256 << 20)):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(folder), str(budget)], capture_output=True, text=True, check=True
            )
            peak, base, elapsed, encoded, decoding = out.stdout.split()
            print(
                f"  {name:15} peak {int(peak) / 1e6:7.0f} MB (process at start {int(base) / 1e6:4.0f} MB)"
                f"   held at once: files {int(encoded) / 1e6:5.0f} MB, decoding {int(decoding) / 1e6:5.0f} MB"
                f"   {float(elapsed):5.1f} s (wall {time.perf_counter() - start:5.1f} s)"
            )


if __name__ == "__main__":
    main()
