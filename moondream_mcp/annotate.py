"""Results drawn over the photo, so the agent can see what was found where."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

MAX_SIDE = 1024
JPEG_QUALITY = 85
# Bright, mutually distinct colours that stay visible on most photos.
PALETTE = [(0, 255, 0), (255, 0, 255), (0, 200, 255), (255, 200, 0), (255, 64, 64)]

Box = tuple[float, float, float, float]
XY = tuple[float, float]


def _open_scaled(jpeg: bytes) -> Image.Image:
    opened = Image.open(io.BytesIO(jpeg))
    opened.draft("RGB", (MAX_SIDE, MAX_SIDE))
    image = opened.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def draw(
    jpeg: bytes,
    *,
    boxes: Sequence[Box] = (),
    points: Sequence[XY] = (),
    polygons: Sequence[Sequence[XY]] = (),
) -> bytes:
    """A JPEG (longest side <= 1024 px) of the image with normalized boxes, points and filled polygons drawn."""
    base = _open_scaled(jpeg).convert("RGBA")
    w, h = base.size
    line = max(2, round(max(w, h) / 250))

    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    fill = ImageDraw.Draw(overlay)
    for i, ring in enumerate(polygons):
        r, g, b = PALETTE[i % len(PALETTE)]
        fill.polygon([(x * w, y * h) for x, y in ring], fill=(r, g, b, 110), outline=(r, g, b, 255), width=line)
    image = Image.alpha_composite(base, overlay).convert("RGB")

    pen = ImageDraw.Draw(image)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        pen.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=PALETTE[i % len(PALETTE)], width=line)
    radius = max(4, line * 2)
    for i, (x, y) in enumerate(points):
        cx, cy = x * w, y * h
        pen.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius],
            fill=PALETTE[i % len(PALETTE)],
            outline=(0, 0, 0),
            width=max(1, line // 2),
        )

    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
