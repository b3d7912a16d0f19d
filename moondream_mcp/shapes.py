"""Segment paths: moved from bbox-relative to image coordinates, and flattened to polygons for drawing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from svgelements import Matrix, Path

# Points sampled along each curved segment when flattening; masks are drawn at <= 1024 px,
# where 12 samples per curve is smoother than the pixels can show.
CURVE_SAMPLES = 12


class PathError(ValueError):
    """The path data could not be parsed."""


# svgelements is imported where a path is read, not with the server: most sessions never segment.


def _parse(d: str) -> Path:
    from svgelements import Path

    try:
        return Path(d)
    except Exception as exc:  # svgelements raises a variety of parse errors
        raise PathError(f"unreadable SVG path data: {d[:60]!r}") from exc


def _bbox_matrix(bbox: tuple[float, float, float, float]) -> Matrix:
    from svgelements import Matrix

    x_min, y_min, x_max, y_max = bbox
    matrix = Matrix()
    matrix.post_scale(x_max - x_min, y_max - y_min)
    matrix.post_translate(x_min, y_min)
    return matrix


def to_image_coordinates(d: str, bbox: tuple[float, float, float, float]) -> str:
    """The segment path with its bbox-relative coordinates mapped into the whole image (still 0–1)."""
    if not d.strip():
        return ""
    path = _parse(d) * _bbox_matrix(bbox)
    path.reify()
    return path.d(relative=False)


def polygons(d: str, *, width: float = 1.0, height: float = 1.0) -> list[list[tuple[float, float]]]:
    """Each subpath as a closed polygon, scaled by width/height (curves sampled, arcs included)."""
    from svgelements import Close, Line, Move

    if not d.strip():
        return []
    result: list[list[tuple[float, float]]] = []
    for sub in _parse(d).as_subpaths():
        ring: list[tuple[float, float]] = []
        for seg in sub:
            if isinstance(seg, Move):
                ring.append((seg.end.x, seg.end.y))
            elif isinstance(seg, (Line, Close)):
                if seg.end is not None:
                    ring.append((seg.end.x, seg.end.y))
            elif seg.start is not None and seg.end is not None:
                ring.extend((p.x, p.y) for p in (seg.point(i / CURVE_SAMPLES) for i in range(1, CURVE_SAMPLES + 1)))
        if len(ring) >= 3:
            result.append([(x * width, y * height) for x, y in ring])
    return result
