"""Regions of an image at up to its original resolution, cut from the source bytes rather than from the
downscaled JPEG sent to the API: what an agent needs to read a plate or a label it could not see.

The decode is bounded as prepare() bounds it (the same header limits, memory judged before decoding, a
deadline); a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that still gives every region its full
resolution up to `max_side`, and never at more than FULL_DECODE_PIXEL_FLOOR pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from .encode import (
    _DRAFTABLE,
    _SIDEWAYS,
    _UPRIGHT,
    FULL_DECODE_PIXEL_FLOOR,
    Watch,
    _flatten,
    _orientation,
    _pixels_bytes,
    _resized,
    _to_8bit,
    check_header,
    check_memory,
    decode_untrusted,
    decoding_memory,
    encode_jpeg,
)

Region = tuple[float, float, float, float]  # normalized x_min, y_min, x_max, y_max of the image as displayed
PixelBox = tuple[int, int, int, int]  # x_min, y_min, x_max (exclusive), y_max (exclusive)

# Where a displayed point (u, v) lies in the stored pixels, for each EXIF orientation (all normalized):
# the inverse of the transposition that shows the stored image upright.
_STORED: dict[int, Callable[[float, float], tuple[float, float]]] = {
    1: lambda u, v: (u, v),
    2: lambda u, v: (1 - u, v),
    3: lambda u, v: (1 - u, 1 - v),
    4: lambda u, v: (u, 1 - v),
    5: lambda u, v: (v, u),
    6: lambda u, v: (v, 1 - u),
    7: lambda u, v: (1 - v, 1 - u),
    8: lambda u, v: (1 - v, u),
}


@dataclass(frozen=True)
class Cutout:
    jpeg: bytes
    width: int  # the JPEG's size: the region's, or less when it was longer than max_side
    height: int
    pixels: PixelBox  # the region in the original image as displayed


@dataclass(frozen=True)
class Cutouts:
    pieces: list[Cutout]
    width: int  # the original image as displayed
    height: int


def cut(
    data: bytes,
    regions: Sequence[Region],
    *,
    max_side: int,
    max_pixels: int,
    budget: int,
    label: str,
    memory_limit: int | None = None,
    watch: Watch | None = None,
) -> Cutouts:
    """Each region as a JPEG (long side <= max_side, data URL under `budget` characters), upright.
    Raises Stopped when `watch` says so."""

    def work(image: Image.Image) -> Cutouts:
        plan = _planned(image, data, regions, max_side, max_pixels, label, memory_limit)
        return _cut_planned(image, plan, max_side, budget, watch)

    return decode_untrusted(data, label, work, watch)


def memory_needed(
    data: bytes,
    regions: Sequence[Region],
    *,
    max_side: int,
    max_pixels: int,
    label: str,
    memory_limit: int | None = None,
) -> int:
    """Bytes of memory cut() will take, judged from the header alone; ImageError for what it would refuse."""
    return decode_untrusted(
        data, label, lambda image: _planned(image, data, regions, max_side, max_pixels, label, memory_limit).memory
    )


@dataclass(frozen=True)
class _Plan:
    boxes: list[PixelBox]  # each region in pixels of the image as displayed
    stored: list[Region]  # each region in the stored image, normalized
    orientation: int
    shown: tuple[int, int]
    memory: int


def _planned(
    image: Image.Image,
    data: bytes,
    regions: Sequence[Region],
    max_side: int,
    max_pixels: int,
    label: str,
    memory_limit: int | None,
) -> _Plan:
    """Refuses what must not be decoded, sets JPEG draft mode and judges the memory the cut will take."""
    check_header(image, data, max_pixels, label)
    width, height = image.size
    orientation = _orientation(image)
    shown = (height, width) if orientation in _SIDEWAYS else (width, height)
    # Whole pixels of the picture as displayed first, so what is cut is exactly what is reported.
    boxes = [_pixel_box(r, *shown) for r in regions]
    stored = [_stored_region(_normalized(b, *shown), orientation) for b in boxes]
    if image.format in _DRAFTABLE:
        scale = _draft_scale(width, height, stored, max_side)
        if scale > 1:
            image.draft("RGB", (math.ceil(width / scale), math.ceil(height / scale)))
    sw, sh = image.size  # after draft mode: the size decoded
    largest = max(
        (_pixels_bytes(math.ceil((s1 - s0) * sw) + 1, math.ceil((t1 - t0) * sh) + 1, 4) for s0, t0, s1, t1 in stored),
        default=0,
    )
    # The decoded image, then one region at a time: its crop and RGB(A) copy, and a few at the size sent.
    memory = decoding_memory(image, (width, height)) + 2 * largest + 4 * _pixels_bytes(max_side, max_side, 4)
    check_memory(memory, memory_limit, (width, height), label)
    return _Plan(boxes=boxes, stored=stored, orientation=orientation, shown=shown, memory=memory)


def _cut_planned(image: Image.Image, plan: _Plan, max_side: int, budget: int, watch: Watch | None) -> Cutouts:
    image.load()
    if watch is not None:
        watch.check()
    source = _to_8bit(image)
    sw, sh = source.size  # after draft mode: the decoded size
    pieces = []
    for box, (s0, t0, s1, t1) in zip(plan.boxes, plan.stored, strict=True):
        # Rounded, not floored: at full scale these are whole pixels, whatever float error the mapping added.
        x0, y0 = min(round(s0 * sw), sw - 1), min(round(t0 * sh), sh - 1)
        piece = source.crop((x0, y0, max(x0 + 1, round(s1 * sw)), max(y0 + 1, round(t1 * sh))))
        piece = _flatten(_resized(piece, _fit_side(piece.size, max_side)))
        if plan.orientation in _UPRIGHT:
            piece = piece.transpose(_UPRIGHT[plan.orientation])
        jpeg, sent = encode_jpeg(piece, budget=budget)
        pieces.append(Cutout(jpeg=jpeg, width=sent.width, height=sent.height, pixels=box))
        if watch is not None:
            watch.check()
    return Cutouts(pieces=pieces, width=plan.shown[0], height=plan.shown[1])


def _normalized(box: PixelBox, width: int, height: int) -> Region:
    return box[0] / width, box[1] / height, box[2] / width, box[3] / height


def _stored_region(region: Region, orientation: int) -> Region:
    to_stored = _STORED.get(orientation, _STORED[1])
    (a, b), (c, d) = to_stored(region[0], region[1]), to_stored(region[2], region[3])
    return min(a, c), min(b, d), max(a, c), max(b, d)


def _pixel_box(region: Region, width: int, height: int) -> PixelBox:
    """The pixels a normalized region covers, at least one in each direction, inside the image."""
    x0 = min(max(0, math.floor(region[0] * width)), width - 1)
    y0 = min(max(0, math.floor(region[1] * height)), height - 1)
    x1 = max(x0 + 1, min(width, math.ceil(region[2] * width)))
    y1 = max(y0 + 1, min(height, math.ceil(region[3] * height)))
    return x0, y0, x1, y1


def _fit_side(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    w, h = size
    if max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _draft_scale(width: int, height: int, regions: Sequence[Region], max_side: int) -> int:
    """The JPEG DCT scale to decode at: as coarse as every region allows, fine enough to stay under the cap."""
    fine_enough = 8
    for s0, t0, s1, t1 in regions:
        longest = max((s1 - s0) * width, (t1 - t0) * height)
        fine_enough = min(fine_enough, next(s for s in (8, 4, 2, 1) if s == 1 or longest / s >= max_side))
    small_enough = next(
        (s for s in (1, 2, 4) if math.ceil(width / s) * math.ceil(height / s) <= FULL_DECODE_PIXEL_FLOOR), 8
    )
    return max(fine_enough, small_enough)
