"""Regions cut from the original image: as displayed, at full resolution up to the cap, bounded like any decode."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from moondream_mcp.images import ImageError, ImageLoader
from tests.images.test_encode import BLUE_BOX, RED_BOX, photo
from tests.support.pictures import canvas
from tests.support.samples import BLUE, RED, jpeg_bomb, near

pytestmark = pytest.mark.anyio

BUDGET = 1_000_000


def opened(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def centre(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((image.width // 2, image.height // 2))  # type: ignore[return-value]


@pytest.mark.parametrize("orientation", range(1, 9))
async def test_a_region_is_cut_from_the_picture_as_displayed(allowed: Path, orientation: int) -> None:
    picture = photo(allowed / "photo.jpg", (300, 200), orientation)
    async with ImageLoader(allowed_dirs=[allowed]) as images, images.read(picture) as source:
        cut = await images.cut(source, [RED_BOX, BLUE_BOX], max_side=1536, budget=BUDGET)

    assert (cut.width, cut.height) == (300, 200)
    red, blue = cut.pieces
    assert red.pixels == (30, 20, 105, 80)
    assert (red.width, red.height) == (75, 60)
    assert blue.pixels == (180, 110, 270, 180)
    assert near(centre(opened(red.jpeg)), RED)
    assert near(centre(opened(blue.jpeg)), BLUE)


async def test_a_small_region_of_a_big_photo_keeps_every_original_pixel(
    allowed: Path, decoded_sizes: list[tuple[int, int]]
) -> None:
    path = allowed / "big.jpg"
    canvas((6000, 4000), squares=(("red", RED_BOX), ("blue", BLUE_BOX))).save(path, quality=85)
    async with ImageLoader(allowed_dirs=[allowed]) as images, images.read(str(path)) as source:
        prepared = await images.prepare(source)
        cut = await images.cut(source, [(0.1, 0.1, 0.2, 0.2)], max_side=1536, budget=BUDGET)

    # The API saw the photo at 1/4 scale (a draft decode); the region comes from a full-scale decode.
    assert (prepared.sent_width, prepared.sent_height) == (1500, 1000)
    assert decoded_sizes == [(1500, 1000), (6000, 4000)]
    (piece,) = cut.pieces
    assert piece.pixels == (600, 400, 1200, 800)
    assert (piece.width, piece.height) == (600, 400)


async def test_a_large_region_is_decoded_at_reduced_scale_and_capped_at_the_long_side(
    allowed: Path, decoded_sizes: list[tuple[int, int]]
) -> None:
    path = allowed / "big.jpg"
    canvas((6000, 4000)).save(path, quality=85)
    async with ImageLoader(allowed_dirs=[allowed]) as images, images.read(str(path)) as source:
        cut = await images.cut(source, [(0.0, 0.0, 1.0, 0.5)], max_side=1536, budget=BUDGET)

    # 6000 px wide: half scale still gives 3000 >= 1536 px, quarter scale would give 1500 < 1536.
    assert decoded_sizes == [(3000, 2000)]
    (piece,) = cut.pieces
    assert piece.pixels == (0, 0, 6000, 2000)
    assert (piece.width, piece.height) == (1536, 512)


async def test_every_cut_fits_the_size_budget(allowed: Path) -> None:
    noise = Image.effect_noise((1500, 1500), 120).convert("RGB")
    path = allowed / "noise.png"
    noise.save(path)
    async with ImageLoader(allowed_dirs=[allowed]) as images, images.read(str(path)) as source:
        cut = await images.cut(source, [(0, 0, 1, 1)], max_side=1536, budget=200_000)

    (piece,) = cut.pieces
    assert len(piece.jpeg) * 4 / 3 < 200_000


async def test_a_jpeg_decompression_bomb_is_refused_before_cutting(allowed: Path) -> None:
    bomb = jpeg_bomb(allowed / "bomb.jpg", 30_000, 30_000)
    async with ImageLoader(allowed_dirs=[allowed]) as images, images.read(str(bomb)) as source:
        with pytest.raises(ImageError, match="too large to decode safely"):
            await images.cut(source, [(0, 0, 0.1, 0.1)], max_side=1536, budget=BUDGET)
