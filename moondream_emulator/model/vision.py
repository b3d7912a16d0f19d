"""What the emulator "sees": the solid-coloured regions of an image, found by pixel colour alone.

Pure functions over Pillow images; no model and no numpy. Pixels are classified to the nearest colour
of a small named palette, thin fringes (anti-aliasing, JPEG ringing) are eroded away, and what is left
is split into 4-connected regions. Coordinates are normalized to 0-1 with the origin at the top-left of
the pixels as received: EXIF orientation is deliberately ignored, as the real API ignores it.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageChops

# Several references per name, so that both Pillow's named colours ("green" is (0, 128, 0)) and the
# pure primaries people type by hand ((0, 255, 0)) land on the name a person would use.
PALETTE: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (200, 20, 30), (139, 0, 0), (230, 40, 75)),
    "green": ((0, 128, 0), (0, 255, 0), (34, 139, 34), (0, 90, 0), (60, 190, 90)),
    "blue": ((0, 0, 255), (30, 80, 220), (0, 0, 139), (135, 190, 235), (65, 105, 225)),
    "yellow": ((255, 255, 0), (240, 220, 40)),
    "orange": ((255, 165, 0), (255, 120, 0)),
    "purple": ((128, 0, 128), (160, 32, 240), (90, 30, 140)),
    "pink": ((255, 192, 203), (255, 105, 180)),
    "cyan": ((0, 255, 255), (0, 190, 210), (0, 128, 128)),
    "magenta": ((255, 0, 255), (210, 0, 210)),
    "brown": ((165, 42, 42), (139, 69, 19), (110, 60, 30), (210, 170, 120)),
    "black": ((0, 0, 0), (30, 30, 30)),
    "white": ((255, 255, 255), (235, 235, 235)),
    "gray": ((128, 128, 128), (90, 90, 90), (170, 170, 170)),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)
ALIASES = {"grey": "gray"}

# A pixel farther than this (Euclidean, 0-255 RGB) from every reference is of no named colour.
MAX_DISTANCE = 80
# Analysis runs on a copy whose longest side is at most this: 1 px there is < 0.004 of the image.
ANALYSIS_SIDE = 256
# Erosion depth in analysis pixels. Blended edge pixels (red fading into white reads as pink) form
# bands up to two pixels wide; eroding twice removes them, and every surviving region is grown back
# by the same amount, so a solid shape keeps its exact extent.
ERODE = 2
_UNKNOWN = 255
_LUT_BITS = 4  # classification table indexed by the top 4 bits of each channel
_COLOUR_WORD = re.compile(r"\b(" + "|".join([*COLOUR_NAMES, *ALIASES]) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Box:
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def as_dict(self) -> dict[str, float]:
        return {"x_min": self.x_min, "y_min": self.y_min, "x_max": self.x_max, "y_max": self.y_max}

    def contains(self, x: float, y: float) -> bool:
        return self.x_min <= x <= self.x_max and self.y_min <= y <= self.y_max


@dataclass(frozen=True)
class Region:
    """One connected area of one colour."""

    colour: str
    box: Box
    centre: tuple[float, float]  # centroid of the region's pixels
    area: float  # fraction of the image
    # Eroded pixel runs (row, x_start, x_end) at analysis scale, kept for tracing the outline on demand.
    _runs: tuple[tuple[int, int, int], ...] = field(repr=False, compare=False)
    _size: tuple[int, int] = field(repr=False, compare=False)

    def outline(self, tolerance: float = 1.5) -> list[tuple[float, float]]:
        """The region's outer boundary as a simplified polygon, normalized to the image.

        `tolerance` is in analysis pixels: larger gives a coarser polygon. Holes are not traced.
        """
        w, h = self._size
        mask_rows = _grow(self._runs, ERODE, w, h)
        ring = _trace(mask_rows)
        simplified = _simplify_closed(ring, tolerance)
        return [(x / w, y / h) for x, y in simplified]


@dataclass(frozen=True)
class Scene:
    """Everything the emulator sees in one image."""

    width: int
    height: int
    background: str | None  # the colour most of the image's border has, if any
    regions: tuple[Region, ...]  # largest first; regions of background colour touching the border excluded

    def of_colour(self, colour: str) -> list[Region]:
        return [r for r in self.regions if r.colour == colour]

    def colours(self) -> list[str]:
        """Colours present, in the order of their largest region."""
        return list(dict.fromkeys(r.colour for r in self.regions))


def colour_in(text: str) -> str | None:
    """The first palette colour named as a word in text ("the Blue car" -> "blue"), or None."""
    match = _COLOUR_WORD.search(text)
    if match is None:
        return None
    word = match.group(1).lower()
    return ALIASES.get(word, word)


def analyse(image: Image.Image) -> Scene:
    """The coloured regions of an image (any mode; transparency is seen as white)."""
    width, height = image.size
    small = _analysis_copy(image)
    w, h = small.size
    labels = _classify(small)
    core = _erode(labels, ERODE)
    background = _border_colour(labels.tobytes(), w, h)
    regions: list[Region] = []
    min_pixels = max(4, (w * h) // 10_000)
    for label, runs in _components(core.tobytes(), w, h):
        count = sum(x1 - x0 for _, x0, x1 in runs)
        if count < min_pixels:
            continue  # speckle: JPEG noise or the remains of a fringe
        region = _region(COLOUR_NAMES[label], runs, count, w, h)
        box = region.box
        touches_border = box.x_min == 0 or box.y_min == 0 or box.x_max == 1 or box.y_max == 1
        if region.colour == background and touches_border:
            continue
        regions.append(region)
    regions.sort(key=lambda r: (-r.area, r.box.y_min, r.box.x_min))
    return Scene(width, height, background, tuple(regions))


def _analysis_copy(image: Image.Image) -> Image.Image:
    """An RGB copy at most ANALYSIS_SIDE on its longest side, transparency flattened onto white."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    scale = ANALYSIS_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return image.convert("RGB")


@functools.cache
def _lookup_table() -> bytes:
    """Palette index (or _UNKNOWN) for each colour cell of 4 bits per channel."""
    refs = [(index, ref) for index, name in enumerate(COLOUR_NAMES) for ref in PALETTE[name]]
    cells = 1 << _LUT_BITS
    half = 1 << (7 - _LUT_BITS)
    table = bytearray()
    for r in range(cells):
        for g in range(cells):
            for b in range(cells):
                centre = (
                    (r << (8 - _LUT_BITS)) + half,
                    (g << (8 - _LUT_BITS)) + half,
                    (b << (8 - _LUT_BITS)) + half,
                )
                index, distance = min(((i, math.dist(centre, ref)) for i, ref in refs), key=lambda t: t[1])
                table.append(index if distance <= MAX_DISTANCE else _UNKNOWN)
    return bytes(table)


def _classify(rgb: Image.Image) -> Image.Image:
    """An "L" image of palette indexes, _UNKNOWN where no colour is close."""
    table = _lookup_table()
    shift = 8 - _LUT_BITS
    r, g, b = (band.point(lambda v: v >> shift).tobytes() for band in rgb.split())
    rg = bytes(x << _LUT_BITS | y for x, y in zip(r, g))
    cell = _LUT_BITS
    labels = bytes(table[x << cell | y] for x, y in zip(rg, b))
    return Image.frombytes("L", rgb.size, labels)


def _shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """The image moved by (dx, dy); the uncovered edge keeps its own pixels (as if the image went on)."""
    w, h = image.size
    out = image.copy()
    out.paste(image.crop((max(0, -dx), max(0, -dy), w - max(0, dx), h - max(0, dy))), (max(0, dx), max(0, dy)))
    return out


def _erode(labels: Image.Image, times: int) -> Image.Image:
    """Labels with every pixel whose 8 neighbours differ from it set to _UNKNOWN, `times` over.

    Eroding by a square, as regions are later grown back by a square, makes the pair an opening:
    shapes wider than the square come back exactly, corners (inner ones too) included.
    """
    for _ in range(times):
        differs = None
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            diff = ImageChops.difference(labels, _shifted(labels, dx, dy))
            differs = diff if differs is None else ImageChops.lighter(differs, diff)
        assert differs is not None
        mask = differs.point(lambda v: 255 if v else 0)
        labels = labels.copy()
        labels.paste(_UNKNOWN, mask=mask)
    return labels


def _border_colour(labels: bytes, w: int, h: int) -> str | None:
    border = bytearray(labels[:w]) + labels[(h - 1) * w :]
    border += bytes(labels[y * w] for y in range(h)) + bytes(labels[y * w + w - 1] for y in range(h))
    counts: dict[int, int] = defaultdict(int)
    for value in border:
        counts[value] += 1
    label, count = max(counts.items(), key=lambda t: (t[1], -t[0]))
    if label == _UNKNOWN or count * 2 < len(border):
        return None
    return COLOUR_NAMES[label]


_RUN = re.compile(rb"([\x00-\xfe])\1*", re.DOTALL)


def _components(labels: bytes, w: int, h: int) -> list[tuple[int, list[tuple[int, int, int]]]]:
    """4-connected components of equal labels (ignoring _UNKNOWN), as (label, runs) in scan order."""
    runs: list[tuple[int, int, int, int]] = []  # (row, x0, x1, label)
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous: list[int] = []
    for y in range(h):
        row = labels[y * w : (y + 1) * w]
        current: list[int] = []
        j = 0
        for match in _RUN.finditer(row):
            x0, x1 = match.span()
            label = row[x0]
            rid = len(runs)
            runs.append((y, x0, x1, label))
            parent.append(rid)
            current.append(rid)
            while j < len(previous) and runs[previous[j]][2] <= x0:
                j += 1
            k = j
            while k < len(previous) and runs[previous[k]][1] < x1:
                other = previous[k]
                if runs[other][3] == label:
                    a, b = root(rid), root(other)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                k += 1
        previous = current
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for rid, (y, x0, x1, _) in enumerate(runs):
        groups.setdefault(root(rid), []).append((y, x0, x1))
    return [(runs[rid][3], members) for rid, members in groups.items()]


def _region(colour: str, runs: list[tuple[int, int, int]], count: int, w: int, h: int) -> Region:
    # Sum of pixel centres (x + 0.5) over a run [x0, x1) is (x1 - x0) * (x0 + x1) / 2.
    sx = sum((x1 - x0) * (x0 + x1) / 2 for _, x0, x1 in runs)
    sy = sum((x1 - x0) * (y + 0.5) for y, x0, x1 in runs)
    x_min = max(0, min(x0 for _, x0, _ in runs) - ERODE)
    x_max = min(w, max(x1 for _, _, x1 in runs) + ERODE)
    y_min = max(0, min(y for y, _, _ in runs) - ERODE)
    y_max = min(h, max(y for y, _, _ in runs) + 1 + ERODE)
    box = Box(x_min / w, y_min / h, x_max / w, y_max / h)
    grown = sum(x1 - x0 for _, x0, x1 in _flatten(_grow(tuple(runs), ERODE, w, h)))
    return Region(colour, box, (sx / count / w, sy / count / h), grown / (w * h), tuple(runs), (w, h))


def _grow(runs: Sequence[tuple[int, int, int]], by: int, w: int, h: int) -> dict[int, list[tuple[int, int]]]:
    """The runs dilated by a (2*by+1)-pixel square and clipped to the image: row -> sorted intervals."""
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for y, x0, x1 in runs:
        for row in range(max(0, y - by), min(h, y + by + 1)):
            spans[row].append((max(0, x0 - by), min(w, x1 + by)))
    return {row: _merge(intervals) for row, intervals in spans.items()}


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for x0, x1 in sorted(intervals):
        if merged and x0 <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], x1))
        else:
            merged.append((x0, x1))
    return merged


def _flatten(rows: dict[int, list[tuple[int, int]]]) -> Iterable[tuple[int, int, int]]:
    for y, intervals in rows.items():
        for x0, x1 in intervals:
            yield y, x0, x1


def _trace(rows: dict[int, list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """The outer boundary of a pixel set along pixel edges, clockwise on screen, corners only.

    The set is treated as 4-connected: pixels touching only at a corner are walked around separately,
    which is why a right turn is preferred when both are possible.
    """
    members = {(x, y) for y, x0, x1 in _flatten(rows) for x in range(x0, x1)}
    top = min(rows)
    start = (rows[top][0][0], top)  # top-left corner of the topmost, leftmost pixel: on the outer boundary
    vertex, direction = start, (1, 0)
    corners: list[tuple[int, int]] = [start]
    while True:
        vx, vy = vertex
        dx, dy = direction
        rx, ry = -dy, dx  # "right" of the heading on screen, where the region lies
        ahead_right = (math.floor(vx + (dx + rx) / 2), math.floor(vy + (dy + ry) / 2))
        ahead_left = (math.floor(vx + (dx - rx) / 2), math.floor(vy + (dy - ry) / 2))
        if ahead_right not in members:
            turned = (rx, ry)
        elif ahead_left in members:
            turned = (dy, -dx)
        else:
            turned = direction
        if turned != direction and vertex != corners[-1]:
            corners.append(vertex)
        direction = turned
        vertex = (vx + direction[0], vy + direction[1])
        if vertex == start:
            return corners


def _simplify_closed(ring: list[tuple[int, int]], tolerance: float) -> list[tuple[float, float]]:
    """Ramer-Douglas-Peucker on a closed ring, split at the vertex farthest from the first."""
    points = [(float(x), float(y)) for x, y in ring]
    if len(points) <= 3:
        return points
    far = max(range(len(points)), key=lambda i: math.dist(points[0], points[i]))
    first = _rdp(points[: far + 1], tolerance)
    second = _rdp([*points[far:], points[0]], tolerance)
    return first[:-1] + second[:-1]


def _rdp(points: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Ramer-Douglas-Peucker on an open polyline; iterative, as staircase edges can be long."""
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        (ax, ay), (bx, by) = points[first], points[last]
        length = math.hypot(bx - ax, by - ay)
        worst, index = -1.0, first
        for i in range(first + 1, last):
            px, py = points[i]
            if length == 0:
                distance = math.hypot(px - ax, py - ay)
            else:
                distance = abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / length
            if distance > worst:
                worst, index = distance, i
        if worst > tolerance:
            keep[index] = True
            stack += [(first, index), (index, last)]
    return [p for p, kept in zip(points, keep) if kept]
