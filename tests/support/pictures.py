"""Test pictures: solid shapes on a plain background at known places."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

Rect = tuple[float, float, float, float]  # normalized x_min, y_min, x_max, y_max


def canvas(
    size: tuple[int, int] = (400, 300),
    squares: Sequence[tuple[str, Rect]] = (("red", (0.25, 0.2, 0.5, 0.6)),),
    background: str = "white",
) -> Image.Image:
    """An RGB image with each (colour, normalized rectangle) filled in."""
    image = Image.new("RGB", size, background)
    pen = ImageDraw.Draw(image)
    w, h = size
    for colour, (x0, y0, x1, y1) in squares:
        pen.rectangle([round(x0 * w), round(y0 * h), round(x1 * w) - 1, round(y1 * h) - 1], fill=colour)
    return image


def save(image: Image.Image, path: Path, **options: object) -> str:
    image.save(path, **options)
    return str(path)


def assert_box(actual: dict[str, float], expected: Rect, tolerance: float = 0.02) -> None:
    got = (actual["x_min"], actual["y_min"], actual["x_max"], actual["y_max"])
    assert all(abs(a - e) <= tolerance for a, e in zip(got, expected)), f"{got} is not within {tolerance} of {expected}"
