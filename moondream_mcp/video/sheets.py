"""Contact sheets: a few frames side by side, each labelled with its time and the found shapes drawn on it,
as one JPEG small enough to hand an agent (<= MAX_BYTES). Blocking."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from ..annotate import PALETTE
from .tracking import Shape

MAX_BYTES = 1_000_000
TILE_SIDE = 360  # longest side of one tile, in pixels
_GAP = 6
_BACKGROUND = (40, 40, 40)


@dataclass
class Tile:
    image: Image.Image
    label: str
    shapes: Sequence[Shape] = field(default_factory=list)


def sheet(tiles: Sequence[Tile], *, columns: int) -> bytes:
    """The tiles in rows of `columns`, as a JPEG of at most MAX_BYTES."""
    side = TILE_SIDE
    while True:
        jpeg = _render(tiles, columns, side)
        if len(jpeg) <= MAX_BYTES or side <= 64:
            return jpeg
        side = int(side * 0.75)


def _render(tiles: Sequence[Tile], columns: int, side: int) -> bytes:
    drawn = [_tile(t, side) for t in tiles]
    cell_w = max((d.width for d in drawn), default=side)
    cell_h = max((d.height for d in drawn), default=side)
    rows = max(1, math.ceil(len(drawn) / columns))
    canvas = Image.new("RGB", (columns * cell_w + (columns + 1) * _GAP, rows * cell_h + (rows + 1) * _GAP), _BACKGROUND)
    for i, image in enumerate(drawn):
        row, column = divmod(i, columns)
        canvas.paste(image, (_GAP + column * (cell_w + _GAP), _GAP + row * (cell_h + _GAP)))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=80)
    return out.getvalue()


def _tile(tile: Tile, side: int) -> Image.Image:
    image = tile.image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    w, h = image.size
    pen = ImageDraw.Draw(image)
    width = max(2, round(max(w, h) / 180))
    for i, (x0, y0, x1, y1) in enumerate(tile.shapes):
        colour = PALETTE[i % len(PALETTE)]
        if x0 == x1 and y0 == y1:
            r = max(4, width * 2)
            pen.ellipse([x0 * w - r, y0 * h - r, x0 * w + r, y0 * h + r], fill=colour, outline=(0, 0, 0))
        else:
            pen.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=colour, width=width)
    left, top, right, bottom = pen.textbbox((0, 0), tile.label)
    pen.rectangle([0, 0, right - left + 8, bottom - top + 6], fill=(0, 0, 0))
    pen.text((4, 3 - top), tile.label, fill=(255, 255, 255))
    return image
