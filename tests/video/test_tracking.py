"""The tracker on detections laid out by hand: what joins a track, what starts a new one, and where a track is
between its samples."""

from __future__ import annotations

import pytest

from moondream_mcp.video.tracking import Timeline, track


def box(x: float, y: float = 0.4, side: float = 0.1) -> tuple[float, float, float, float]:
    return (x, y, x + side, y + side)


def test_two_objects_crossing_paths_keep_their_own_tracks() -> None:
    # One moves right along the top, the other left along the bottom: their boxes never overlap each other.
    samples = [(t, [box(0.1 + 0.05 * t, 0.1), box(0.8 - 0.05 * t, 0.7)]) for t in range(10)]
    tracks = track(samples)
    assert [len(tr.times) for tr in tracks] == [10, 10]
    assert all(tr.shapes[0][1] == tr.shapes[-1][1] for tr in tracks), "each stays on its own row"


def test_a_sample_that_misses_the_object_does_not_end_its_track() -> None:
    samples = [(0.0, [box(0.1)]), (1.0, []), (2.0, [box(0.12)])]
    (only,) = track(samples)
    assert only.times == [0.0, 2.0]


def test_an_object_moving_past_its_own_width_between_samples_is_still_followed() -> None:
    # 1.5 widths a sample: no overlap at all, yet a like-sized box a diagonal away, then on the predicted path.
    samples = [(float(t), [box(0.05 + 0.1 * t)]) for t in range(8)]
    assert len(track(samples)) == 1


def test_something_far_away_starts_a_new_track() -> None:
    tracks = track([(0.0, [box(0.1)]), (1.0, [box(0.8)])])
    assert [tr.id for tr in tracks] == [1, 2]


def test_points_join_the_nearest_track() -> None:
    def point(x: float, y: float) -> tuple[float, float, float, float]:
        return (x, y, x, y)

    tracks = track([(0.0, [point(0.2, 0.2), point(0.8, 0.8)]), (1.0, [point(0.75, 0.8), point(0.25, 0.2)])])
    assert [[s[0] for s in tr.shapes] for tr in tracks] == [[0.2, 0.25], [0.8, 0.75]]


def test_between_samples_a_track_is_interpolated_and_past_its_ends_carried_on() -> None:
    (moving,) = track([(0.0, [box(0.1)]), (1.0, [box(0.2)])])
    timeline = Timeline([moving], reach=1.0)
    assert timeline.at(0.5)[0] == pytest.approx(box(0.15))
    assert timeline.at(1.5)[0] == pytest.approx(box(0.25)), "carried on at its velocity"
    assert timeline.at(2.5) == [], "not beyond the reach"
