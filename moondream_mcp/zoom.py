"""Looking closer: regions of an image, found by detect or given as boxes, cut from the original at up to
full resolution (images/crops.py), with where each lies in original pixels and normalized. Knows nothing
of MCP."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from .client import MoondreamClient
from .failures import InputError
from .images import ImageLoader
from .images.crops import Region
from .vision import Box, ImageSize

MAX_SIDE = 1536  # long side of a crop, in pixels: enough to read small print, small enough for any client
MAX_CROPS = 8


class PixelBox(BaseModel):
    x_min: int
    y_min: int
    x_max: int = Field(description="Exclusive.")
    y_max: int = Field(description="Exclusive.")


class Crop(BaseModel):
    box: Box = Field(description="The region cropped (padding included), normalized 0-1.")
    pixels: PixelBox = Field(description="The same region in pixels of the original image.")
    width: int = Field(description="Width of the crop as returned (the region's, or less past 1536 px).")
    height: int
    path: str | None = Field(default=None, description="Where the crop was saved.")


class Zoom(BaseModel):
    crops: list[Crop] = Field(description="In the order of the images returned.")
    found: int | None = Field(description="With object: how many detect found (crops keeps the first max_crops).")
    request_id: str | None
    image: ImageSize


def padded(box: Region, padding: float) -> Region:
    """The box grown by `padding` times its size on every side, kept inside the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * padding, (y1 - y0) * padding
    return max(0.0, x0 - dx), max(0.0, y0 - dy), min(1.0, x1 + dx), min(1.0, y1 + dy)


async def zoom(
    client: MoondreamClient,
    images: ImageLoader,
    image: str,
    *,
    object: str | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    max_crops: int = 3,
    padding: float = 0.1,
    budget: int,
) -> tuple[Zoom, list[bytes]]:
    """The crops' description and their JPEGs (each a data URL under `budget` characters), in order."""
    if (object is None) == (boxes is None):
        raise InputError("give either object (what to find and crop) or boxes (the regions to crop), not both")
    regions = [_region(b) for b in boxes or ()]
    if boxes is not None and not regions:
        raise InputError("boxes is empty: give at least one [x_min, y_min, x_max, y_max] box")
    async with images.read(image) as source:
        found = request_id = None
        if object is not None:
            prepared = await images.prepare(source)
            detected = await client.skills.detect(prepared.data_url, object)
            regions = [(b.x_min, b.y_min, b.x_max, b.y_max) for b in detected.objects]
            found, request_id = len(regions), detected.request_id
            if not regions:
                return Zoom(
                    crops=[],
                    found=0,
                    request_id=request_id,
                    image=ImageSize(width=prepared.width, height=prepared.height),
                ), []
            regions = regions[:max_crops]
        cut = [padded(r, padding) for r in regions]
        pieces = await images.cut(source, cut, max_side=MAX_SIDE, budget=budget)
    crops = [
        Crop(
            box=Box(x_min=r[0], y_min=r[1], x_max=r[2], y_max=r[3]),
            pixels=PixelBox(x_min=p.pixels[0], y_min=p.pixels[1], x_max=p.pixels[2], y_max=p.pixels[3]),
            width=p.width,
            height=p.height,
        )
        for r, p in zip(cut, pieces.pieces, strict=True)
    ]
    size = ImageSize(width=pieces.width, height=pieces.height)
    return Zoom(crops=crops, found=found, request_id=request_id, image=size), [p.jpeg for p in pieces.pieces]


def _region(box: Sequence[float]) -> Region:
    if len(box) != 4 or not all(0 <= v <= 1 for v in box):
        raise InputError(f"a box is [x_min, y_min, x_max, y_max], each 0-1; got {list(box)}")
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"a box needs x_min < x_max and y_min < y_max; got {list(box)}")
    return x0, y0, x1, y1
