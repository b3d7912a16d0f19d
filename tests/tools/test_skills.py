"""The five skill tools, through the MCP protocol, against the emulator: geometry end to end."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from moondream_mcp.client.tuning import checkpoint_model
from tests.support.calls import call
from tests.support.pictures import assert_box, canvas, save

pytestmark = pytest.mark.anyio

RED = (0.25, 0.2, 0.5, 0.6)


def picture(result) -> Image.Image:
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1
    assert images[0].mime_type == "image/jpeg"
    return Image.open(io.BytesIO(base64.b64decode(images[0].data))).convert("RGB")


async def test_detect_reports_the_box_of_a_red_square(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    out = await call(client, "detect", image=path, object="red square")
    assert out["count"] == 1
    assert_box(out["objects"][0], RED)
    assert out["image"] == {"width": 400, "height": 300}
    assert out["request_id"]


async def test_detect_reports_boxes_in_displayed_orientation(client: Client, workdir: Path) -> None:
    displayed = canvas((400, 300), [("red", (0.1, 0.1, 0.3, 0.4))])
    # Stored sideways; EXIF orientation 6 tells viewers to turn it 90° clockwise to display it.
    stored = displayed.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(stored, workdir / "phone.jpg", exif=exif, quality=95)
    out = await call(client, "detect", image=path, object="red")
    assert out["image"] == {"width": 400, "height": 300}
    assert out["count"] == 1
    assert_box(out["objects"][0], (0.1, 0.1, 0.3, 0.4))


async def test_transparent_pixels_are_seen_as_white(client: Client, workdir: Path) -> None:
    image = Image.new("RGBA", (300, 300), (0, 0, 255, 0))  # invisible blue everywhere
    image.paste((255, 0, 0, 255), (150, 150, 240, 270))
    path = save(image, workdir / "cutout.png")
    red = await call(client, "detect", image=path, object="red")
    blue = await call(client, "detect", image=path, object="blue")
    assert_box(red["objects"][0], (0.5, 0.5, 0.8, 0.9))
    assert blue["count"] == 0


async def test_a_24_megapixel_jpeg_is_downscaled_but_reported_at_full_size(
    client: Client, workdir: Path, emulator
) -> None:
    path = save(canvas((6000, 4000), [("red", RED)]), workdir / "big.jpg", quality=90)
    out = await call(client, "detect", image=path, object="red")
    assert out["image"] == {"width": 6000, "height": 4000}
    assert_box(out["objects"][0], RED)
    sent = emulator.emulator.requests[-1].json["image_url"]
    jpeg = Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1])))
    assert jpeg.width * jpeg.height <= 2_000_000


async def test_only_the_first_frame_of_an_animated_gif_is_seen(client: Client, workdir: Path) -> None:
    first = canvas((200, 200), [("red", (0.0, 0.0, 0.5, 0.5))])
    second = canvas((200, 200), [("red", (0.5, 0.5, 1.0, 1.0))])
    path = str(workdir / "anim.gif")
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    out = await call(client, "detect", image=path, object="red")
    assert out["count"] == 1
    assert_box(out["objects"][0], (0.0, 0.0, 0.5, 0.5))


async def test_a_heic_photo_opens(client: Client, workdir: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra (pillow-heif)")
    pillow_heif.register_heif_opener()
    path = save(canvas((640, 480), [("red", RED)]), workdir / "phone.heic", quality=95)
    out = await call(client, "detect", image=path, object="red")
    assert out["image"] == {"width": 640, "height": 480}
    assert_box(out["objects"][0], RED)


async def test_point_reports_the_centre_of_each_object(client: Client, workdir: Path) -> None:
    path = save(canvas(squares=[("blue", (0.1, 0.1, 0.3, 0.3)), ("blue", (0.6, 0.5, 0.9, 0.9))]), workdir / "b.png")
    out = await call(client, "point", image=path, object="blue dots")
    assert out["count"] == 2
    centres = sorted((p["x"], p["y"]) for p in out["points"])
    assert [c for pair in centres for c in pair] == pytest.approx([0.2, 0.2, 0.75, 0.7], abs=0.02)


async def test_segment_returns_the_outline_in_bbox_and_image_coordinates(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    out = await call(client, "segment", image=path, object="red")
    assert_box(out["bbox"], RED)
    # Every vertex of the whole-image path lies on the square's edge.
    from moondream_mcp.shapes import polygons

    (ring,) = polygons(out["image_path"])
    x0, y0, x1, y1 = RED
    for x, y in ring:
        on_vertical = min(abs(x - x0), abs(x - x1)) <= 0.02 and y0 - 0.02 <= y <= y1 + 0.02
        on_horizontal = min(abs(y - y0), abs(y - y1)) <= 0.02 and x0 - 0.02 <= x <= x1 + 0.02
        assert on_vertical or on_horizontal, (x, y)
    # The API's own path is relative to the bbox: it spans 0..1.
    (local,) = polygons(out["path"])
    assert min(x for x, _ in local) == pytest.approx(0, abs=0.02)
    assert max(y for _, y in local) == pytest.approx(1, abs=0.02)


async def test_caption_describes_what_is_there(client: Client, workdir: Path) -> None:
    path = save(canvas(squares=[("red", RED), ("green", (0.6, 0.6, 0.9, 0.9))]), workdir / "two.png")
    out = await call(client, "caption", image=path, length="short")
    assert "red" in out["caption"].lower() and "green" in out["caption"].lower()
    assert out["image"] == {"width": 400, "height": 300}
    assert out["finish_reason"] == "stop"


async def test_query_counts_and_always_sends_reasoning(client: Client, workdir: Path, emulator) -> None:
    path = save(canvas(squares=[("red", (0.1, 0.1, 0.2, 0.2)), ("red", (0.5, 0.5, 0.7, 0.7))]), workdir / "r.png")
    out = await call(client, "query", image=path, question="How many red squares are there?")
    assert out["answer"] == "2"
    assert out["reasoning"] is None
    assert emulator.emulator.requests[-1].json["reasoning"] is False


async def test_query_with_reasoning_returns_grounded_points(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    out = await call(client, "query", image=path, question="How many red squares?", reasoning=True)
    grounding = out["reasoning"]["grounding"]
    assert grounding, out
    text = out["reasoning"]["text"]
    assert "red" in text[grounding[0]["start_idx"] : grounding[0]["end_idx"]]
    point = grounding[0]["points"][0]
    assert point == pytest.approx({"x": 0.375, "y": 0.4}, abs=0.02)


async def test_query_and_point_send_spatial_hints_and_segment_a_model(client: Client, workdir: Path, emulator) -> None:
    path = save(canvas(squares=[("blue", (0.1, 0.1, 0.3, 0.3)), ("blue", (0.6, 0.5, 0.9, 0.9))]), workdir / "b.png")
    hints = [[0.2, 0.2], [0.6, 0.5, 0.9, 0.9]]
    asked = await call(client, "query", image=path, question="How many blue shapes?", spatial_refs=hints)
    assert asked["answer"] == "2"
    assert emulator.emulator.requests[-1].json["spatial_refs"] == hints
    pointed = await call(client, "point", image=path, object="blue", spatial_refs=hints[:1])
    assert pointed["count"] == 2
    assert emulator.emulator.requests[-1].json["spatial_refs"] == hints[:1]
    outlined = await call(
        client, "segment", image=path, object="blue", spatial_refs=[[0.75, 0.7]], model="moondream3-preview"
    )
    assert_box(outlined["bbox"], (0.6, 0.5, 0.9, 0.9))
    assert emulator.emulator.requests[-1].json["model"] == "moondream3-preview"


async def test_query_without_an_image_is_text_only(client: Client, emulator) -> None:
    out = await call(client, "query", question="What is the capital of France?")
    assert out["image"] is None
    assert "image_url" not in emulator.emulator.requests[-1].json


async def test_detect_with_annotate_draws_the_box(client: Client, workdir: Path) -> None:
    path = save(canvas((2000, 1500), [("red", RED)]), workdir / "big.png")
    result = await client.call_tool("detect", {"image": path, "object": "red", "annotate": True})
    assert not result.is_error
    drawn = picture(result)
    assert max(drawn.size) <= 1024
    w, h = drawn.size
    r, g, _ = drawn.getpixel((round(RED[0] * w), round((RED[1] + RED[3]) / 2 * h)))
    assert g > 150 and r < 120, "the box outline is drawn on the square's left edge"
    assert drawn.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=10)


async def test_segment_with_annotate_fills_the_mask_in_place(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    result = await client.call_tool("segment", {"image": path, "object": "red", "annotate": True})
    drawn = picture(result)
    w, h = drawn.size
    inside = drawn.getpixel((round(0.375 * w), round(0.4 * h)))
    outside = drawn.getpixel((round(0.8 * w), round(0.8 * h)))
    assert inside[1] > 60, f"the mask tints the square: {inside}"
    assert outside == pytest.approx((255, 255, 255), abs=10)


async def test_point_with_annotate_marks_the_point(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    result = await client.call_tool("point", {"image": path, "object": "red", "annotate": True})
    drawn = picture(result)
    w, h = drawn.size
    assert drawn.getpixel((round(0.375 * w), round(0.4 * h)))[1] > 150


async def test_every_tool_has_a_title_annotations_and_described_parameters(client: Client) -> None:
    skills = {"caption", "query", "detect", "point", "segment"}
    tools = [t for t in (await client.list_tools()).tools if t.name in skills]
    assert {t.name for t in tools} == skills
    for tool in tools:
        assert tool.title and tool.description
        assert tool.annotations.read_only_hint is True and tool.annotations.open_world_hint is True
        for name, schema in tool.input_schema["properties"].items():
            assert schema.get("description"), f"{tool.name}.{name} has no description"
        assert tool.output_schema is not None


async def test_a_strict_client_sending_null_for_every_optional_parameter_is_served(
    client: Client, workdir: Path
) -> None:
    image = save(canvas(), workdir / "square.png")
    found = await call(client, "detect", image=image, object="red", max_objects=None, model=None, annotate=False)
    answer = await call(client, "query", question="How many red squares?", image=None, reasoning=False, model=None)
    outline = await call(client, "segment", image=image, object="red", spatial_refs=None, annotate=False)
    assert found["count"] == 1 and answer["image"] is None and outline["bbox"] is not None


async def test_the_instructions_say_how_a_finetuned_checkpoint_is_named_as_the_api_names_it(client: Client) -> None:
    assert client.instructions is not None
    assert checkpoint_model("<finetune_id>", "<step>") in client.instructions
