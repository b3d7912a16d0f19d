"""Results drawn over the photo, so the agent can see what was found where."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

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
    line = max(2, round(max(w, h) / 250))  # as mark() draws

    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    fill = ImageDraw.Draw(overlay)
    for i, ring in enumerate(polygons):
        r, g, b = PALETTE[i % len(PALETTE)]
        fill.polygon([(x * w, y * h) for x, y in ring], fill=(r, g, b, 110), outline=(r, g, b, 255), width=line)
    image = Image.alpha_composite(base, overlay).convert("RGB")
    mark(image, boxes=boxes, points=points)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def mark(image: Image.Image, *, boxes: Sequence[Box] = (), points: Sequence[XY] = (), numbered: bool = False) -> None:
    """Draw normalized boxes and points on an RGB image in place; `numbered` labels each 1, 2, ... in
    list order, so a person can name the one to change."""
    w, h = image.size
    line = max(2, round(max(w, h) / 250))
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, line * 6)) if numbered else None
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        colour = PALETTE[i % len(PALETTE)]
        pen.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=colour, width=line)
        if font is not None:
            _label(pen, font, str(i + 1), (x0 * w, y0 * h), colour)
    radius = max(4, line * 2)
    for i, (x, y) in enumerate(points):
        cx, cy = x * w, y * h
        colour = PALETTE[i % len(PALETTE)]
        pen.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius],
            fill=colour,
            outline=(0, 0, 0),
            width=max(1, line // 2),
        )
        if font is not None:
            _label(pen, font, str(i + 1), (cx + radius, cy - radius), colour)


def _label(
    pen: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    text: str,
    at: XY,
    colour: tuple[int, int, int],
) -> None:
    left, top, right, bottom = pen.textbbox(at, text, font=font)
    pen.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=colour)
    pen.text(at, text, fill=(0, 0, 0), font=font)
