"""zoom through the protocol: crops at full resolution of what detect finds, or of given boxes."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from tests.support.calls import refusal
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio


def crops(result) -> list[Image.Image]:
    assert not result.is_error, result.content[0].text
    return [
        Image.open(io.BytesIO(base64.b64decode(c.data))).convert("RGB") for c in result.content if c.type == "image"
    ]


def colour(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return image.getpixel((int(x * (image.width - 1)), int(y * (image.height - 1))))  # type: ignore[return-value]


async def test_zoom_crops_what_detect_finds_at_full_resolution(client: Client, workdir: Path) -> None:
    # The API sees this photo downscaled to ~2 MP; the crop keeps every original pixel of the square.
    path = save(canvas((4000, 3000), [("red", (0.5, 0.5, 0.6, 0.6))]), workdir / "big.png")
    result = await client.call_tool("zoom", {"image": path, "object": "red", "padding": 0})

    (crop,) = crops(result)
    out = result.structured_content
    assert out["found"] == 1 and out["image"] == {"width": 4000, "height": 3000}
    (info,) = out["crops"]
    assert info["pixels"] == pytest.approx({"x_min": 2000, "y_min": 1500, "x_max": 2400, "y_max": 1800}, abs=12)
    assert (info["width"], info["height"]) == crop.size
    assert crop.size == pytest.approx((400, 300), abs=12)
    assert colour(crop, 0.5, 0.5) == pytest.approx((255, 0, 0), abs=30)
    assert Path(info["path"]).is_file()
    assert [c.type for c in result.content] == ["text", "image", "resource_link"]


async def test_zoom_with_padding_keeps_a_margin_around_the_box(client: Client, workdir: Path) -> None:
    path = save(canvas((1000, 1000), [("red", (0.4, 0.4, 0.6, 0.6))]), workdir / "square.png")
    result = await client.call_tool("zoom", {"image": path, "boxes": [[0.4, 0.4, 0.6, 0.6]], "padding": 0.5})

    (crop,) = crops(result)
    (info,) = result.structured_content["crops"]
    assert info["box"] == pytest.approx({"x_min": 0.3, "y_min": 0.3, "x_max": 0.7, "y_max": 0.7})
    assert info["pixels"] == {"x_min": 300, "y_min": 300, "x_max": 700, "y_max": 700}
    assert colour(crop, 0.05, 0.05) == pytest.approx((255, 255, 255), abs=10)  # the margin
    assert colour(crop, 0.5, 0.5) == pytest.approx((255, 0, 0), abs=30)
    assert result.structured_content["found"] is None


async def test_zoom_cuts_boxes_of_a_rotated_phone_photo_as_displayed(client: Client, workdir: Path) -> None:
    displayed = canvas((600, 400), [("red", (0.1, 0.1, 0.3, 0.4)), ("blue", (0.6, 0.5, 0.9, 0.9))])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers turn it 90° clockwise
    path = save(displayed.transpose(Image.Transpose.ROTATE_90), workdir / "phone.jpg", exif=exif, quality=95)
    result = await client.call_tool(
        "zoom", {"image": path, "boxes": [[0.1, 0.1, 0.3, 0.4], [0.6, 0.5, 0.9, 0.9]], "padding": 0}
    )

    red, blue = crops(result)
    assert result.structured_content["image"] == {"width": 600, "height": 400}
    assert [c["pixels"] for c in result.structured_content["crops"]] == [
        {"x_min": 60, "y_min": 40, "x_max": 180, "y_max": 160},
        {"x_min": 360, "y_min": 200, "x_max": 540, "y_max": 360},
    ]
    assert red.size == (120, 120) and blue.size == (180, 160)
    assert colour(red, 0.5, 0.5) == pytest.approx((255, 0, 0), abs=40)
    assert colour(blue, 0.5, 0.5) == pytest.approx((0, 0, 255), abs=40)


async def test_zoom_keeps_the_first_max_crops_and_says_how_many_were_found(client: Client, workdir: Path) -> None:
    squares = [("red", (0.05 + 0.2 * i, 0.4, 0.15 + 0.2 * i, 0.6)) for i in range(4)]
    path = save(canvas((800, 400), squares), workdir / "row.png")
    result = await client.call_tool("zoom", {"image": path, "object": "red", "max_crops": 2})

    assert len(crops(result)) == 2
    assert result.structured_content["found"] == 4
    assert len(result.structured_content["crops"]) == 2


async def test_a_large_region_comes_back_at_most_1536_pixels_long(client: Client, workdir: Path) -> None:
    path = save(canvas((4000, 1000)), workdir / "wide.png")
    result = await client.call_tool("zoom", {"image": path, "boxes": [[0, 0, 1, 1]], "padding": 0})

    (crop,) = crops(result)
    assert crop.size == (1536, 384)
    assert result.structured_content["crops"][0]["pixels"] == {"x_min": 0, "y_min": 0, "x_max": 4000, "y_max": 1000}


async def test_zoom_on_nothing_found_returns_no_crops(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    result = await client.call_tool("zoom", {"image": path, "object": "green"})

    assert crops(result) == []
    assert result.structured_content["found"] == 0 and result.structured_content["crops"] == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "give either object"),
        ({"object": "red", "boxes": [[0, 0, 1, 1]]}, "give either object"),
        ({"boxes": [[0.5, 0.1, 0.2, 0.9]]}, "x_min < x_max"),
        ({"boxes": []}, "at least one"),
    ],
)
async def test_zoom_refuses_arguments_that_cannot_work(
    client: Client, workdir: Path, arguments: dict, expected: str
) -> None:
    path = save(canvas(), workdir / "square.png")
    assert expected in await refusal(client, "zoom", image=path, **arguments)


async def test_zoom_reads_only_what_the_file_guard_opens(client: Client, workdir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (workdir / "escape.png").symlink_to(save(canvas(), secret / "square.png"))
    outside = await refusal(client, "zoom", image=str(workdir / "escape.png"), boxes=[[0, 0, 1, 1]])
    missing = await refusal(client, "zoom", image=str(secret / "nothing.png"), boxes=[[0, 0, 1, 1]])
    # The same answer whether or not the file is there: nothing is learnt about the disk outside.
    for text in (outside, missing):
        assert "outside the allowed directories" in text and "not found" not in text
