"""The sampler on frames laid out by hand: which are taken, and when sampling says it stopped short."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from moondream_mcp.video.sampling import Sampler, Sampling, VideoInfo


def frames(seconds: float, fps: int = 10) -> Iterator[Any]:
    class Frame:
        def __init__(self, index: int) -> None:
            self.index, self.pts, self.t = index, index, index / fps

    return (Frame(i) for i in range(round(seconds * fps)))


def info(duration: float | None, fps: int = 10) -> VideoInfo:
    return VideoInfo(width=64, height=48, rotation=0, fps=fps, duration=duration, frames=None, audio=False)


def taken(sampler: Sampler, seconds: float) -> list[float]:
    return [f.t for f in sampler.sampled(frames(seconds))]


def test_one_frame_per_interval_and_always_the_last() -> None:
    sampler = Sampler(Sampling(fps=2), info(3.0))
    assert taken(sampler, 3.0) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 2.9]
    assert sampler.planned == 7 and not sampler.truncated


def test_max_frames_widens_the_spacing_when_the_length_is_known() -> None:
    sampler = Sampler(Sampling(fps=10, max_frames=4), info(3.0))
    assert taken(sampler, 3.0) == [0.0, 1.0, 2.0, 2.9]
    assert not sampler.truncated


def test_with_the_length_unknown_sampling_stops_at_max_frames_and_says_so() -> None:
    sampler = Sampler(Sampling(fps=1, max_frames=3), info(None))
    assert taken(sampler, 10.0) == [0.0, 1.0, 2.0]
    assert sampler.truncated


def test_every_n_frames_counts_from_the_start_of_the_range() -> None:
    sampler = Sampler(Sampling(every_n_frames=7), info(2.0))
    assert taken(sampler, 2.0) == [0.0, 0.7, 1.4, 1.9]
