"""The same object across sampled frames, joined into tracks, and where each track is between its samples.

A greedy IoU tracker (after Bochinski et al., "High-Speed Tracking-by-Detection Without Using Image
Information", 2017) with a constant-velocity guess: in time order, each detection joins the open track it
overlaps most (IoU >= MIN_IOU) — against the track's last box or where its last two boxes say it has moved
to, whichever overlaps more. Failing any overlap, a box of a like size whose centre is less than a box
diagonal from the track's joins it (samples far apart see an object jump past its own width); otherwise it
starts a new track. Points join the nearest open track within MAX_POINT_DISTANCE. A track missed in more
than MAX_GAP samples in a row is closed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..scoring import iou

Shape = tuple[float, float, float, float]  # a box (x_min, y_min, x_max, y_max), normalized; a point is (x, y, x, y)

MIN_IOU = 0.3
MAX_POINT_DISTANCE = 0.2
MAX_GAP = 2


@dataclass
class Track:
    id: int
    times: list[float] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)
    missed: int = 0  # samples in a row without it, since it was last seen

    def _velocity(self, first: int, second: int) -> Shape:
        dt = self.times[second] - self.times[first]
        if dt <= 0:
            return (0.0, 0.0, 0.0, 0.0)
        a, b = self.shapes[first], self.shapes[second]
        return (
            (b[0] - a[0]) / dt,
            (b[1] - a[1]) / dt,
            (b[2] - a[2]) / dt,
            (b[3] - a[3]) / dt,
        )

    def predicted(self, t: float) -> Shape:
        """Where the track would be at `t`, moving on as between its last two samples."""
        last = self.shapes[-1]
        if len(self.shapes) < 2:
            return last
        return _moved(last, self._velocity(-2, -1), t - self.times[-1])

    def at(self, t: float, reach: float) -> Shape | None:
        """Where the track is at `t`: interpolated between samples; up to `reach` seconds beyond its first and
        last sample, carried on at its velocity there; None farther out."""
        times, shapes = self.times, self.shapes
        if t < times[0] - reach or t > times[-1] + reach:
            return None
        if t <= times[0]:
            still = len(shapes) < 2
            return shapes[0] if still else _clamped(_moved(shapes[0], self._velocity(0, 1), t - times[0]))
        if t >= times[-1]:
            still = len(shapes) < 2
            return shapes[-1] if still else _clamped(_moved(shapes[-1], self._velocity(-2, -1), t - times[-1]))
        i = bisect.bisect_right(times, t)
        t0, t1 = times[i - 1], times[i]
        w = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
        a, b = shapes[i - 1], shapes[i]
        return (
            a[0] + (b[0] - a[0]) * w,
            a[1] + (b[1] - a[1]) * w,
            a[2] + (b[2] - a[2]) * w,
            a[3] + (b[3] - a[3]) * w,
        )


def _moved(shape: Shape, velocity: Shape, dt: float) -> Shape:
    return (
        shape[0] + velocity[0] * dt,
        shape[1] + velocity[1] * dt,
        shape[2] + velocity[2] * dt,
        shape[3] + velocity[3] * dt,
    )


def _clamped(shape: Shape) -> Shape:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in shape)
    return (x0, y0, x1, y1)


def _affinity(track: Track, shape: Shape, t: float) -> float:
    """How well `shape` continues `track`, 0 for not at all."""
    last, guess = track.shapes[-1], track.predicted(t)
    if shape[0] == shape[2] and shape[1] == shape[3]:  # a point
        near = min(math.dist(shape[:2], last[:2]), math.dist(shape[:2], guess[:2]))
        return 1.0 - near / MAX_POINT_DISTANCE if near <= MAX_POINT_DISTANCE else 0.0
    best = max(iou(shape, last), iou(shape, guess))
    if best >= MIN_IOU:
        return best
    area, known = _area(shape), _area(last)
    if not (area > 0 and known > 0 and 0.5 <= area / known <= 2):
        return 0.0
    reach = math.dist(shape[:2], shape[2:])
    near = min(math.dist(_centre(shape), _centre(last)), math.dist(_centre(shape), _centre(guess)))
    # Below any overlap match: a track that still overlaps something takes it first.
    return MIN_IOU * (1 - near / reach) if near < reach else 0.0


def _area(shape: Shape) -> float:
    return max(0.0, shape[2] - shape[0]) * max(0.0, shape[3] - shape[1])


def _centre(shape: Shape) -> tuple[float, float]:
    return (shape[0] + shape[2]) / 2, (shape[1] + shape[3]) / 2


def track(samples: Iterable[tuple[float, Sequence[Shape]]]) -> list[Track]:
    """Tracks over `samples` — (time in seconds, shapes seen then) in time order — numbered from 1 as they
    start."""
    tracks: list[Track] = []
    open_: list[Track] = []
    for t, shapes in samples:
        scored = ((_affinity(tr, s, t), ti, si) for ti, tr in enumerate(open_) for si, s in enumerate(shapes))
        pairs = sorted((pair for pair in scored if pair[0] > 0), reverse=True)
        joined_tracks: set[int] = set()
        joined_shapes: set[int] = set()
        for _, ti, si in pairs:
            if ti in joined_tracks or si in joined_shapes:
                continue
            joined_tracks.add(ti)
            joined_shapes.add(si)
            chosen = open_[ti]
            chosen.times.append(t)
            chosen.shapes.append(shapes[si])
            chosen.missed = 0
        for ti, tr in enumerate(open_):
            if ti not in joined_tracks:
                tr.missed += 1
        open_ = [tr for tr in open_ if tr.missed <= MAX_GAP]
        for si, s in enumerate(shapes):
            if si not in joined_shapes:
                started = Track(id=len(tracks) + 1, times=[t], shapes=[s])
                tracks.append(started)
                open_.append(started)
    return tracks


class Timeline:
    """The shapes of many tracks at increasing times, each track carried `reach` seconds past its ends."""

    def __init__(self, tracks: Sequence[Track], reach: float) -> None:
        self._reach = reach
        self._tracks = sorted(tracks, key=lambda tr: tr.times[0])
        self._next = 0
        self._active: list[Track] = []
        self._last_t = -math.inf

    def at(self, t: float) -> list[Shape]:
        if t < self._last_t:  # out of order: start over
            self._next, self._active = 0, []
        self._last_t = t
        while self._next < len(self._tracks) and self._tracks[self._next].times[0] - self._reach <= t:
            self._active.append(self._tracks[self._next])
            self._next += 1
        self._active = [tr for tr in self._active if tr.times[-1] + self._reach >= t]
        return [s for tr in self._active if (s := tr.at(t, self._reach)) is not None]
