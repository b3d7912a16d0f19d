"""What reaches the model: oriented as displayed, flattened onto white, first frame, right-sized, bounded."""

from __future__ import annotations

import base64
import io
import math
import os
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from moondream_mcp.images import ImageError, ImageLoader, encode
from moondream_mcp.images.encode import JPEG_MAX_SIDE, MAX_DATA_URL_CHARS, encode_jpeg, fit_within, jpeg_scans
from tests.support.pictures import canvas
from tests.support.samples import (
    BLUE,
    RED,
    WHITE,
    colour_at,
    jpeg_bomb,
    jpeg_bytes,
    many_scans_jpeg,
    near,
    png_bomb,
    sent,
)

pytestmark = pytest.mark.anyio

# Red near the top-left and blue near the bottom-right of the picture as displayed: no flip or
# rotation maps this layout onto itself, so a wrong orientation always moves a colour.
RED_BOX = (0.1, 0.1, 0.35, 0.4)
BLUE_BOX = (0.6, 0.55, 0.9, 0.9)
RED_POINT = (0.22, 0.25)
BLUE_POINT = (0.75, 0.72)

# How a camera stores a picture it tags with each EXIF orientation: the inverse of the transpose that
# shows it upright.
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def photo(path: Path, displayed: tuple[int, int], orientation: int) -> str:
    picture = canvas(displayed, squares=(("red", RED_BOX), ("blue", BLUE_BOX)))
    method = STORED_AS[orientation]
    stored = picture.transpose(method) if method is not None else picture
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif)
    return str(path)


@pytest.mark.parametrize("orientation", range(1, 9))
async def test_every_exif_orientation_is_sent_as_displayed(allowed: Path, orientation: int) -> None:
    async with ImageLoader(allowed_dirs=[allowed]) as images:
        prepared = await images.load(photo(allowed / "photo.jpg", (300, 200), orientation))

    assert (prepared.width, prepared.height) == (300, 200)
    assert (prepared.sent_width, prepared.sent_height) == (300, 200)
    assert near(colour_at(prepared, *RED_POINT), RED)
    assert near(colour_at(prepared, *BLUE_POINT), BLUE)


@pytest.mark.parametrize("orientation", [3, 6, 8])
async def test_a_downscaled_rotated_photo_reports_its_displayed_size(allowed: Path, orientation: int) -> None:
    # Large enough that draft mode decodes at reduced scale: the reported size must still be the original.
    async with ImageLoader(allowed_dirs=[allowed], max_pixels=60_000) as images:
        prepared = await images.load(photo(allowed / "photo.jpg", (3000, 2000), orientation))

    assert (prepared.width, prepared.height) == (3000, 2000)
    assert prepared.sent_width * prepared.sent_height <= 60_000
    assert prepared.sent_width / prepared.sent_height == pytest.approx(1.5, rel=0.01)
    assert near(colour_at(prepared, *RED_POINT), RED)
    assert near(colour_at(prepared, *BLUE_POINT), BLUE)


async def test_a_24_megapixel_jpeg_is_decoded_at_reduced_scale_and_sent_under_the_limits(
    allowed: Path, decoded_sizes: list[tuple[int, int]]
) -> None:
    path = allowed / "big.jpg"
    canvas((6000, 4000), squares=(("red", RED_BOX), ("blue", BLUE_BOX))).save(path, quality=85)

    async with ImageLoader(allowed_dirs=[allowed]) as images:
        prepared = await images.load(str(path))

    # The 1/4 scale decode (1.5 MP) is within the budget and close enough to it to send as decoded.
    assert decoded_sizes == [(1500, 1000)]
    assert (prepared.width, prepared.height) == (6000, 4000)
    assert (prepared.sent_width, prepared.sent_height) == (1500, 1000)
    assert len(prepared.data_url) < MAX_DATA_URL_CHARS
    assert near(colour_at(prepared, *RED_POINT), RED)
    assert near(colour_at(prepared, *BLUE_POINT), BLUE)


async def test_a_12_megapixel_jpeg_is_decoded_at_half_scale_and_resampled_to_the_budget(
    allowed: Path, decoded_sizes: list[tuple[int, int]]
) -> None:
    path = allowed / "twelve.jpg"
    canvas((4000, 3000), squares=(("red", RED_BOX), ("blue", BLUE_BOX))).save(path, quality=85)
    async with ImageLoader(allowed_dirs=[allowed]) as images:
        prepared = await images.load(str(path))

    # 1/4 scale would be 0.75 MP, too far under the budget: 1/2 scale (3 MP), then resampled.
    assert decoded_sizes == [(2000, 1500)]
    assert 1_990_000 < prepared.sent_width * prepared.sent_height <= 2_000_000
    assert near(colour_at(prepared, *RED_POINT), RED)


async def test_the_data_url_encodes_exactly_the_jpeg_bytes(loader: ImageLoader, allowed: Path) -> None:
    prepared = await loader.load(photo(allowed / "photo.jpg", (120, 80), 1))

    prefix, payload = prepared.data_url.split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    assert base64.b64decode(payload) == prepared.jpeg
    assert sent(prepared).size == (prepared.sent_width, prepared.sent_height)


async def test_a_small_image_is_never_upscaled(loader: ImageLoader, allowed: Path) -> None:
    canvas((40, 30)).save(allowed / "small.png")

    prepared = await loader.load(str(allowed / "small.png"))

    assert (prepared.width, prepared.height, prepared.sent_width, prepared.sent_height) == (40, 30, 40, 30)


@pytest.mark.parametrize(
    ("mode", "clear", "ink"),
    [
        ("RGBA", (0, 0, 0, 0), (255, 0, 0, 255)),
        ("LA", (0, 0), (0, 255)),
    ],
)
async def test_transparency_is_flattened_onto_white(
    loader: ImageLoader, allowed: Path, mode: str, clear: tuple[int, ...], ink: tuple[int, ...]
) -> None:
    # Transparent pixels are black underneath: dropping alpha instead of compositing would show black.
    image = Image.new(mode, (200, 100), clear)
    image.paste(ink, (20, 20, 80, 80))
    image.save(allowed / "clear.png")

    prepared = await loader.load(str(allowed / "clear.png"))

    assert near(colour_at(prepared, 0.75, 0.5), WHITE)
    assert not near(colour_at(prepared, 0.25, 0.5), WHITE)


async def test_half_transparent_red_is_blended_with_white(loader: ImageLoader, allowed: Path) -> None:
    Image.new("RGBA", (64, 64), (255, 0, 0, 128)).save(allowed / "pink.png")

    prepared = await loader.load(str(allowed / "pink.png"))

    assert near(colour_at(prepared, 0.5, 0.5), (255, 127, 127), tolerance=12)


async def test_a_transparent_colour_key_is_flattened_onto_white(loader: ImageLoader, allowed: Path) -> None:
    image = Image.new("RGB", (100, 100), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 50, 100))
    image.save(allowed / "keyed.png", transparency=(0, 0, 0))

    prepared = await loader.load(str(allowed / "keyed.png"))

    assert near(colour_at(prepared, 0.25, 0.5), RED)
    assert near(colour_at(prepared, 0.75, 0.5), WHITE)


async def test_a_transparent_gif_is_flattened_onto_white(loader: ImageLoader, allowed: Path) -> None:
    image = Image.new("P", (100, 100), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (0, 0, 50, 100))
    image.save(allowed / "keyed.gif", transparency=0)

    prepared = await loader.load(str(allowed / "keyed.gif"))

    assert near(colour_at(prepared, 0.25, 0.5), RED)
    assert near(colour_at(prepared, 0.75, 0.5), WHITE)


@pytest.mark.parametrize("suffix", ["gif", "png", "webp"])
async def test_an_animation_is_sent_as_its_first_frame(loader: ImageLoader, allowed: Path, suffix: str) -> None:
    first, second = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")
    path = allowed / f"animated.{suffix}"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)

    prepared = await loader.load(str(path))

    assert (prepared.width, prepared.height) == (64, 48)
    assert near(colour_at(prepared, 0.5, 0.5), RED)


async def test_a_16_bit_greyscale_png_keeps_its_tones(loader: ImageLoader, allowed: Path) -> None:
    Image.new("I;16", (50, 50), 32768).save(allowed / "deep.png")

    prepared = await loader.load(str(allowed / "deep.png"))

    assert near(colour_at(prepared, 0.5, 0.5), (128, 128, 128), tolerance=4)


async def test_a_cmyk_jpeg_is_sent_as_rgb(loader: ImageLoader, allowed: Path) -> None:
    Image.new("CMYK", (50, 50), (0, 255, 255, 0)).save(allowed / "print.jpg")

    prepared = await loader.load(str(allowed / "print.jpg"))

    assert near(colour_at(prepared, 0.5, 0.5), RED)


async def test_a_heic_photo_is_read_with_pillow_heif(loader: ImageLoader, allowed: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra (pillow-heif)")
    picture = canvas((320, 240), squares=(("red", RED_BOX), ("blue", BLUE_BOX)))
    pillow_heif.from_pillow(picture).save(allowed / "photo.heic", quality=90)

    prepared = await loader.load(str(allowed / "photo.heic"))

    assert (prepared.width, prepared.height) == (320, 240)
    assert near(colour_at(prepared, *RED_POINT), RED)
    assert near(colour_at(prepared, *BLUE_POINT), BLUE)


async def test_an_avif_image_is_read(loader: ImageLoader, allowed: Path) -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF")
    picture = canvas((320, 240), squares=(("red", RED_BOX), ("blue", BLUE_BOX)))
    picture.save(allowed / "photo.avif", quality=90)

    prepared = await loader.load(str(allowed / "photo.avif"))

    assert (prepared.width, prepared.height) == (320, 240)
    assert near(colour_at(prepared, *RED_POINT), RED)


async def test_a_heic_without_the_heif_extra_says_how_to_get_it(
    loader: ImageLoader, allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encode, "heif_supported", lambda: False)
    (allowed / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)

    with pytest.raises(ImageError) as caught:
        await loader.load(str(allowed / "photo.heic"))

    assert str(caught.value) == (
        f"{allowed / 'photo.heic'} is a HEIC/HEIF image, which needs the heif extra (pillow-heif) installed; "
        "install moondream-mcp with the heif extra, or convert the image to JPEG."
    )


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every attempt to decode pixels, so a test can show a refusal came before any."""
    attempts: list[str] = []
    original = ImageFile.ImageFile.load

    def recording_load(self):  # type: ignore[no-untyped-def]
        attempts.append(self.format or "?")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return attempts


@pytest.mark.parametrize(
    ("width", "height", "detail"),
    [
        (9000, 9000, "9000x9000 pixels, over the 64 megapixel limit"),  # under Pillow's own warning
        (30000, 30000, "its header claims more pixels than Pillow will decode"),
    ],
)
async def test_a_png_decompression_bomb_is_refused_before_decoding(
    loader: ImageLoader, allowed: Path, no_pixel_decoding: list[str], width: int, height: int, detail: str
) -> None:
    path = png_bomb(allowed / "bomb.png", width, height)
    assert path.stat().st_size < 2_000_000

    with pytest.raises(ImageError) as caught:
        await loader.load(str(path))

    assert str(caught.value) == (f"refused: {path} is too large to decode safely ({detail}); give a smaller image.")
    assert no_pixel_decoding == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("width", "height", "detail"),
    [
        (13000, 13000, "13000x13000 pixels, over the 160 megapixel limit"),  # Pillow only warns here
        (65000, 65000, "its header claims more pixels than Pillow will decode"),
    ],
)
async def test_a_jpeg_decompression_bomb_is_refused_before_decoding(
    loader: ImageLoader, allowed: Path, no_pixel_decoding: list[str], width: int, height: int, detail: str
) -> None:
    path = jpeg_bomb(allowed / "bomb.jpg", width, height)

    with pytest.raises(ImageError) as caught:
        await loader.load(str(path))

    assert str(caught.value) == (f"refused: {path} is too large to decode safely ({detail}); give a smaller image.")
    assert no_pixel_decoding == []


async def test_text_named_like_a_jpeg_is_refused_without_echoing_it(loader: ImageLoader, allowed: Path) -> None:
    (allowed / "notes.jpg").write_text("api_key = SECRET-TOKEN-123\n" * 20)

    with pytest.raises(ImageError) as caught:
        await loader.load(str(allowed / "notes.jpg"))

    assert str(caught.value) == (
        f"{allowed / 'notes.jpg'} is not an image Pillow can read; "
        "give a JPEG, PNG, GIF, WebP, HEIC, AVIF, BMP or TIFF image."
    )


async def test_a_postscript_file_is_never_handed_to_ghostscript(loader: ImageLoader, allowed: Path) -> None:
    # Pillow would run Ghostscript on EPS; only raster formats are ever tried.
    (allowed / "drawing.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")

    with pytest.raises(ImageError, match="is not an image Pillow can read"):
        await loader.load(str(allowed / "drawing.jpg"))


async def test_a_truncated_jpeg_is_reported_as_corrupt(loader: ImageLoader, allowed: Path) -> None:
    whole = jpeg_bytes(Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)))
    (allowed / "cut.jpg").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ImageError) as caught:
        await loader.load(str(allowed / "cut.jpg"))

    assert str(caught.value) == (f"{allowed / 'cut.jpg'} could not be decoded: the image data is truncated or corrupt.")


def test_an_encoding_over_budget_is_made_smaller_until_it_fits() -> None:
    noise = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))  # incompressible

    jpeg, image = encode_jpeg(noise, budget=60_000)

    assert len("data:image/jpeg;base64,") + 4 * math.ceil(len(jpeg) / 3) < 60_000
    assert image.width < noise.width and image.height < noise.height
    assert Image.open(io.BytesIO(jpeg)).size == image.size


async def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding(
    loader: ImageLoader, allowed: Path, no_pixel_decoding: list[str]
) -> None:
    # Decoding this 0.5 MB file would take seconds of CPU per thousand scans, blocking the images behind it.
    path = many_scans_jpeg(allowed / "scans.jpg", 3000, (8000, 8000))

    with pytest.raises(ImageError) as caught:
        await loader.load(str(path))

    assert str(caught.value) == (
        f"refused: {path} is a JPEG of 3000 scans, over the 100 decoded: that many make decoding take minutes. "
        "Re-save it as an ordinary (baseline) JPEG."
    )
    assert no_pixel_decoding == []


async def test_an_ordinary_progressive_jpeg_is_read(loader: ImageLoader, allowed: Path) -> None:
    path = allowed / "progressive.jpg"
    canvas((600, 400), squares=(("red", RED_BOX), ("blue", BLUE_BOX))).save(path, progressive=True, quality=90)

    prepared = await loader.load(str(path))

    assert jpeg_scans(path.read_bytes()) == 10
    assert near(colour_at(prepared, *RED_POINT), RED)


def test_scans_are_counted_past_an_exif_thumbnail_holding_its_own() -> None:
    # The thumbnail's FF DA sits inside an APP1 segment, which is skipped by its length.
    thumbnail = jpeg_bytes(Image.new("RGB", (32, 32), "red"))
    exif = Image.Exif()
    exif[0x0112] = 1
    with_thumbnail = jpeg_bytes(Image.new("RGB", (64, 64), "blue"), exif=exif.tobytes() + thumbnail)

    assert jpeg_scans(with_thumbnail) == 1
    assert jpeg_scans(b"not a jpeg") == 0


async def test_a_1_by_64_million_png_is_refused_up_front_for_the_memory_it_would_take(
    loader: ImageLoader, allowed: Path, no_pixel_decoding: list[str]
) -> None:
    # 64 MP is within the pixel limit, but every one of its 64 million rows costs Pillow a row pointer.
    path = png_bomb(allowed / "tall.png", 1, 64_000_000)

    with pytest.raises(ImageError) as caught:
        await loader.load(str(path))

    assert str(caught.value) == (
        f"refused: {path} is too large to decode safely (1x64000000 pixels would take about 1,347 MB to decode, "
        "over the 805 MB image work may use); give a smaller image."
    )
    assert no_pixel_decoding == []


@pytest.mark.parametrize("size", [(100_000, 1), (1, 100_000), (70_000, 30)])
async def test_a_real_narrow_image_is_sent_within_jpeg_limits_not_called_corrupt(
    loader: ImageLoader, allowed: Path, size: tuple[int, int]
) -> None:
    path = allowed / "strip.png"
    Image.linear_gradient("L").resize(size).convert("RGB").save(path)

    prepared = await loader.load(str(path))

    assert (prepared.width, prepared.height) == size
    assert max(prepared.sent_width, prepared.sent_height) == JPEG_MAX_SIDE
    assert sent(prepared).size == (prepared.sent_width, prepared.sent_height)


@pytest.mark.parametrize(
    ("size", "max_pixels"),
    [
        ((6000, 4000), 2_000_000),
        ((100_000, 3), 10_000),
        ((3, 100_000), 10_000),
        ((1999, 1001), 2_000_000),
        ((100_000, 1), 2_000_000),
        ((1, 64_000_000), 2_000_000),
    ],
)
def test_fitting_keeps_the_aspect_and_never_exceeds_the_pixel_budget(size: tuple[int, int], max_pixels: int) -> None:
    width, height = fit_within(*size, max_pixels)

    assert width * height <= max_pixels
    assert width <= size[0] and height <= size[1]
    assert max(width, height) <= JPEG_MAX_SIDE
    assert width * height > 0.98 * min(max_pixels, size[0] * size[1]) or min(width, height) <= 3
