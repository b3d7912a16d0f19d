"""What the emulator sees: coloured regions, measured to about a hundredth of the image."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image, ImageDraw

from moondream_emulator.model.vision import Scene, analyse, colour_in


def solid(size=(400, 300), shapes=(("red", (100, 60, 200, 180)),), background="white") -> Image.Image:
    """An image with each (colour, pixel box [x0, y0, x1, y1)) filled in; x1 and y1 excluded."""
    image = Image.new("RGB", size, background)
    pen = ImageDraw.Draw(image)
    for colour, (x0, y0, x1, y1) in shapes:
        pen.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    return image


def reencoded(image: Image.Image, format: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    buffer.seek(0)
    return Image.open(buffer)


def box(scene: Scene, index: int = 0) -> tuple[float, float, float, float]:
    b = scene.regions[index].box
    return (b.x_min, b.y_min, b.x_max, b.y_max)


@pytest.mark.parametrize(
    ("format", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 95}),
        ("JPEG", {"quality": 50}),
        ("GIF", {}),
        ("WEBP", {"quality": 80}),
    ],
)
def test_a_solid_square_is_found_to_within_a_hundredth(format: str, options: dict) -> None:
    scene = analyse(reencoded(solid(), format, **options))
    assert [r.colour for r in scene.regions] == ["red"]
    assert box(scene) == pytest.approx((0.25, 0.2, 0.5, 0.6), abs=0.01)
    assert scene.regions[0].centre == pytest.approx((0.375, 0.4), abs=0.01)


def test_region_edges_are_pixel_edges_not_pixel_centres() -> None:
    scene = analyse(solid((100, 100), [("blue", (10, 30, 20, 70))]))
    assert box(scene) == (0.10, 0.30, 0.20, 0.70)
    assert scene.regions[0].centre == pytest.approx((0.15, 0.5))
    assert scene.regions[0].area == pytest.approx(0.04)


def test_a_large_image_is_measured_relative_to_its_full_size() -> None:
    scene = analyse(solid((3000, 2000), [("green", (300, 1000, 1500, 1800))]))
    assert box(scene) == pytest.approx((0.1, 0.5, 0.5, 0.9), abs=0.005)


def test_a_two_megapixel_jpeg_is_analysed_in_well_under_a_second() -> None:
    image = reencoded(solid((1632, 1224), [("red", (100, 100, 800, 700)), ("blue", (900, 300, 1500, 1100))]), "JPEG")
    started = time.perf_counter()
    image.load()
    scene = analyse(image)
    assert time.perf_counter() - started < 0.5
    assert [r.colour for r in scene.regions] == ["blue", "red"]


def test_blended_edges_of_a_compressed_image_do_not_become_regions_of_their_own() -> None:
    # Red fading into white passes through pink; a low-quality JPEG smears those pixels about.
    shapes = [("red", (40, 40, 160, 140)), ("green", (200, 150, 360, 280)), ("blue", (250, 20, 330, 100))]
    scene = analyse(reencoded(solid(shapes=shapes), "JPEG", quality=30))
    assert sorted(r.colour for r in scene.regions) == ["blue", "green", "red"]


def test_regions_come_largest_first() -> None:
    scene = analyse(
        solid(shapes=[("red", (10, 10, 40, 40)), ("blue", (100, 100, 300, 250)), ("red", (50, 10, 150, 80))])
    )
    assert [r.colour for r in scene.regions] == ["blue", "red", "red"]
    assert [r.area for r in scene.regions] == pytest.approx([0.25, 0.058, 0.0075], abs=0.003)


def test_the_background_is_named_but_not_a_region() -> None:
    scene = analyse(solid(shapes=[("yellow", (100, 100, 200, 200))], background="black"))
    assert scene.background == "black"
    assert [r.colour for r in scene.regions] == ["yellow"]


def test_a_region_of_the_background_colour_inside_another_is_a_region() -> None:
    scene = analyse(solid(shapes=[("red", (100, 60, 300, 240)), ("white", (150, 100, 250, 200))]))
    assert [r.colour for r in scene.regions] == ["red", "white"]


def test_a_region_touching_the_border_reaches_the_border() -> None:
    scene = analyse(reencoded(solid(shapes=[("blue", (0, 0, 120, 90)), ("red", (280, 210, 400, 300))]), "JPEG"))
    assert {r.colour: (r.box.x_min, r.box.y_min, r.box.x_max, r.box.y_max) for r in scene.regions} == {
        "blue": pytest.approx((0.0, 0.0, 0.3, 0.3), abs=0.01),
        "red": pytest.approx((0.7, 0.7, 1.0, 1.0), abs=0.01),
    }


def test_squares_touching_only_at_a_corner_are_separate_regions() -> None:
    scene = analyse(solid(shapes=[("red", (100, 100, 200, 200)), ("red", (200, 200, 300, 290))]))
    assert len(scene.of_colour("red")) == 2


def test_transparent_pixels_are_seen_as_white() -> None:
    image = Image.new("RGBA", (200, 200), (0, 0, 255, 0))
    image.paste((255, 0, 0, 255), (100, 100, 160, 180))
    scene = analyse(image)
    assert scene.background == "white"
    assert [r.colour for r in scene.regions] == ["red"]
    assert box(scene) == pytest.approx((0.5, 0.5, 0.8, 0.9), abs=0.01)


@pytest.mark.parametrize(
    ("pillow_name", "seen_as"),
    [
        ("red", "red"),
        ("green", "green"),
        ("lime", "green"),
        ("blue", "blue"),
        ("navy", "blue"),
        ("yellow", "yellow"),
        ("orange", "orange"),
        ("purple", "purple"),
        ("pink", "pink"),
        ("cyan", "cyan"),
        ("magenta", "magenta"),
        ("brown", "brown"),
        ("gray", "gray"),
        ("black", "black"),
        ("crimson", "red"),
    ],
)
def test_common_colours_are_seen_by_the_name_a_person_would_use(pillow_name: str, seen_as: str) -> None:
    scene = analyse(solid(shapes=[(pillow_name, (100, 100, 300, 200))]))
    assert [r.colour for r in scene.regions] == [seen_as]


@pytest.mark.parametrize(
    ("text", "colour"),
    [
        ("red", "red"),
        ("the Blue car", "blue"),
        ("Red squares", "red"),
        ("a grey cat next to a red one", "gray"),
        ("reddish things", None),
        ("dog", None),
        ("", None),
    ],
)
def test_the_colour_asked_for_is_the_first_palette_word_in_the_text(text: str, colour: str | None) -> None:
    assert colour_in(text) == colour


def test_the_outline_of_a_square_is_its_four_corners() -> None:
    scene = analyse(solid())
    corners = [value for point in scene.regions[0].outline() for value in point]
    assert corners == pytest.approx([0.25, 0.2, 0.5, 0.2, 0.5, 0.6, 0.25, 0.6], abs=0.005)


def _distance_to_segment(p, a, b) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return ((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2) ** 0.5


def _area(ring) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]))) / 2


def test_the_outline_of_a_triangle_follows_its_three_sides() -> None:
    image = Image.new("RGB", (400, 400), "white")
    corners = [(0.25, 0.125), (0.75, 0.625), (0.125, 0.625)]
    ImageDraw.Draw(image).polygon([(x * 400, y * 400) for x, y in corners], fill="purple")
    ring = analyse(reencoded(image, "JPEG", quality=85)).regions[0].outline()
    sides = list(zip(corners, corners[1:] + corners[:1]))
    assert all(min(_distance_to_segment(p, a, b) for a, b in sides) < 0.015 for p in ring)
    assert _area(ring) == pytest.approx(_area(corners), rel=0.05)
    assert len(ring) < 10


def test_the_outline_of_an_l_shape_keeps_its_notch() -> None:
    scene = analyse(solid(shapes=[("green", (100, 50, 160, 250)), ("green", (160, 190, 300, 250))]))
    ring = scene.regions[0].outline()
    assert len(ring) == 6
    assert _area(ring) == pytest.approx(scene.regions[0].area, rel=0.01)
