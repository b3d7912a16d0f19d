"""Contact sheets: a grid of numbered thumbnails, each with its labels drawn (annotate.mark) and
numbered, so a person or an agent can review many labels at a glance. One JPEG per sheet, kept under
MAX_BYTES. Pure drawing: the caller loads the images."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from .annotate import XY, Box, mark

COLUMNS = 4
CELL = 256  # longest side of a thumbnail, in pixels
TITLE = 22  # height of the strip naming each cell
GAP = 4
MAX_BYTES = 1_000_000
QUALITIES = (85, 70, 55, 40)
BACKGROUND = (32, 32, 32)


@dataclass(frozen=True)
class Cell:
    title: str  # e.g. "3 · line 17 · red (2)"
    jpeg: bytes | None  # the image as prepared; None when it could not be loaded
    boxes: Sequence[Box] = ()
    points: Sequence[XY] = ()
    note: str | None = None  # shown instead of the image when there is none
    done: bool = False  # reviewed already: the title strip is green


def _thumbnail(cell: Cell) -> Image.Image:
    if cell.jpeg is None:
        blank = Image.new("RGB", (CELL, CELL * 3 // 4), (90, 0, 0))
        ImageDraw.Draw(blank).multiline_text(
            (6, 6), _wrap(cell.note or "no image", 34), fill=(255, 255, 255), font=_font(12)
        )
        return blank
    opened = Image.open(io.BytesIO(cell.jpeg))
    opened.draft("RGB", (CELL, CELL))
    image = opened.convert("RGB")
    image.thumbnail((CELL, CELL), Image.Resampling.LANCZOS)
    mark(image, boxes=cell.boxes, points=cell.points, numbered=True)
    return image


def _wrap(text: str, width: int) -> str:
    words, rows, row = text.split(), [], ""
    for word in words:
        if row and len(row) + 1 + len(word) > width:
            rows.append(row)
            row = word
        else:
            row = f"{row} {word}".strip()
    return "\n".join([*rows, row][:8])


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw(cells: Sequence[Cell], columns: int = COLUMNS) -> bytes:
    """One sheet: `cells` left to right, top to bottom, each thumbnail under its title strip."""
    rows = max(1, -(-len(cells) // columns))
    width = columns * CELL + (columns + 1) * GAP
    height = rows * (CELL + TITLE) + (rows + 1) * GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    pen = ImageDraw.Draw(sheet)
    font = _font(15)
    for index, cell in enumerate(cells):
        left = GAP + (index % columns) * (CELL + GAP)
        top = GAP + (index // columns) * (CELL + TITLE + GAP)
        pen.rectangle([left, top, left + CELL - 1, top + TITLE - 1], fill=(40, 120, 40) if cell.done else (60, 60, 60))
        pen.text((left + 4, top + 3), cell.title, fill=(255, 255, 255), font=font)
        thumb = _thumbnail(cell)
        sheet.paste(thumb, (left + (CELL - thumb.width) // 2, top + TITLE))
    for quality in QUALITIES:
        out = io.BytesIO()
        sheet.save(out, format="JPEG", quality=quality)
        if out.tell() <= MAX_BYTES:
            break
    return out.getvalue()
