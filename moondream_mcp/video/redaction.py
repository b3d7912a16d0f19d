"""Regions of a decoded frame blurred, pixelated or boxed out, in the frame's own YUV planes: only the
regions are touched, so the rest of the frame reaches the encoder exactly as decoded. Blocking."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from av.video.frame import VideoFrame
from av.video.plane import VideoPlane
from PIL import Image, ImageFilter

from .tracking import Shape

Style = Literal["blur", "pixelate", "box"]

# Boxes grow by this share of their size on every side (and by at least PAD_PIXELS): detections are a
# little tight, and a box carried between samples is a guess.
PAD = 0.1
PAD_PIXELS = 4
PIXELATE_BLOCKS = 8  # blocks across the shorter side of a region: nothing finer survives
BLUR_SHARE = 0.25  # blur radius, as a share of the shorter side of a region

# Planar 8-bit YUV, edited in place; anything else is converted to yuv420p first.
EDITABLE = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def stored(shape: Shape, rotation: int) -> Shape:
    """A normalized box as displayed -> the same box in the stored frame, which the viewer turns by
    `rotation` degrees counter-clockwise."""
    x0, y0, x1, y1 = shape
    if rotation == 90:  # stored (x, y) shows at (y, 1 - x)
        corners = [(1 - y0, x0), (1 - y1, x1)]
    elif rotation == 270:  # stored (x, y) shows at (1 - y, x)
        corners = [(y0, 1 - x0), (y1, 1 - x1)]
    elif rotation == 180:
        corners = [(1 - x0, 1 - y0), (1 - x1, 1 - y1)]
    else:
        return shape
    (a, b), (c, d) = corners
    return (min(a, c), min(b, d), max(a, c), max(b, d))


def pixels(shape: Shape, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A normalized box -> padded pixel box (x0, y0, x1, y1) on even coordinates, clipped to the frame."""
    x0, y0, x1, y1 = shape[0] * width, shape[1] * height, shape[2] * width, shape[3] * height
    px = max(PAD_PIXELS, PAD * (x1 - x0))
    py = max(PAD_PIXELS, PAD * (y1 - y0))
    # Even edges: with chroma at half resolution, an odd edge would leave half a chroma sample outside.
    left = max(0, math.floor((x0 - px) / 2) * 2)
    top = max(0, math.floor((y0 - py) / 2) * 2)
    right = min(width, math.ceil((x1 + px) / 2) * 2)
    bottom = min(height, math.ceil((y1 + py) / 2) * 2)
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def redact(frame: VideoFrame, shapes: Sequence[Shape], rotation: int, style: Style) -> VideoFrame:
    """The frame with each shape (normalized, as displayed) hidden. Planar YUV frames are edited in place,
    made writable first so the decoder's own reference frames stay untouched; others are converted."""
    boxes = [b for s in shapes if (b := pixels(stored(s, rotation), frame.width, frame.height)) is not None]
    if not boxes:
        return frame
    if frame.format.name in EDITABLE:
        edited = frame
        edited.make_writable()
    else:
        edited = frame.reformat(format="yuv420p")
        edited.pts, edited.time_base = frame.pts, frame.time_base
    full_range = edited.format.name.startswith("yuvj") or int(edited.color_range or 0) == _FULL_RANGE
    for left, top, right, bottom in boxes:
        shorter = min(right - left, bottom - top)
        radius = max(2.0, BLUR_SHARE * shorter)
        grid = (
            max(1, round(PIXELATE_BLOCKS * (right - left) / shorter)),
            max(1, round(PIXELATE_BLOCKS * (bottom - top) / shorter)),
        )
        for index, plane in enumerate(edited.planes):
            sx, sy = edited.width / plane.width, edited.height / plane.height
            region = (
                math.floor(left / sx),
                math.floor(top / sy),
                min(plane.width, math.ceil(right / sx)),
                min(plane.height, math.ceil(bottom / sy)),
            )
            if style == "box":
                fill = (0 if full_range else 16) if index == 0 else 128
                _fill(plane, region, fill)
            else:
                _filter(plane, region, style, radius / sx, grid)
    return edited


def _rows(plane: VideoPlane, region: tuple[int, int, int, int]) -> tuple[memoryview, list[slice]]:
    left, top, right, bottom = region
    line = plane.line_size
    return memoryview(plane), [slice(y * line + left, y * line + right) for y in range(top, bottom)]


def _fill(plane: VideoPlane, region: tuple[int, int, int, int], value: int) -> None:
    buffer, rows = _rows(plane, region)
    blank = bytes([value]) * (region[2] - region[0])
    for row in rows:
        buffer[row] = blank


def _filter(
    plane: VideoPlane, region: tuple[int, int, int, int], style: Style, radius: float, grid: tuple[int, int]
) -> None:
    w, h = region[2] - region[0], region[3] - region[1]
    if w <= 0 or h <= 0:
        return
    buffer, rows = _rows(plane, region)
    image = Image.frombytes("L", (w, h), b"".join(buffer[row] for row in rows))
    if style == "blur":
        image = image.filter(ImageFilter.GaussianBlur(max(1.0, radius)))
    else:
        # The same grid on every plane, so chroma blocks line up with luma blocks.
        image = image.resize(grid, Image.Resampling.BOX).resize((w, h), Image.Resampling.NEAREST)
    out = image.tobytes()
    for i, row in enumerate(rows):
        buffer[row] = out[i * w : (i + 1) * w]
