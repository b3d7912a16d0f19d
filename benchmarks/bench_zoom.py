"""zoom's crops of a 24 MP JPEG, timed side by side with a naive full decode, printed as ratios. Not a test.

    a small region (600 x 400 px):   full-scale decode (every original pixel is wanted)
    half the photo (6000 x 2000 px): decoded at 1/2 scale, since the crop is capped at 1536 px
    naive:                           full decode, crop, resize — what the half-photo crop would cost without it

Run: .venv/bin/python benchmarks/bench_zoom.py
"""

from __future__ import annotations

import io
import time

from PIL import Image, ImageDraw

from moondream_mcp.images.crops import cut

ROUNDS = 5
BUDGET = 1_000_000


def photo() -> bytes:
    image = Image.effect_noise((6000, 4000), 40).convert("RGB")
    ImageDraw.Draw(image).rectangle([600, 400, 1200, 800], fill="red")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def timed(work: object) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def naive(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        piece = image.convert("RGB").crop((0, 0, 6000, 2000))
        piece.thumbnail((1536, 1536))
        piece.save(io.BytesIO(), "JPEG", quality=90)


def main() -> None:
    data = photo()
    small = timed(
        lambda: cut(data, [(0.1, 0.1, 0.2, 0.2)], max_side=1536, max_pixels=2_000_000, budget=BUDGET, label="x")
    )
    half = timed(
        lambda: cut(data, [(0.0, 0.0, 1.0, 0.5)], max_side=1536, max_pixels=2_000_000, budget=BUDGET, label="x")
    )
    full = timed(lambda: naive(data))
    print(f"24 MP JPEG, {len(data) / 1e6:.1f} MB; best of {ROUNDS}")
    print(f"  small region, full scale:   {small * 1000:7.1f} ms")
    print(f"  half the photo, 1/2 scale:  {half * 1000:7.1f} ms")
    print(f"  half the photo, naive:      {full * 1000:7.1f} ms   (zoom takes {half / full:.2f} of it)")


if __name__ == "__main__":
    main()
