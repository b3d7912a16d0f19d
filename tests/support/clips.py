"""Test videos made with PyAV: a red square moving across a white background, optionally stored turned
(with display-rotation metadata) and with a sine tone; and decoding a video back as the viewer sees it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw

Rect = tuple[float, float, float, float]  # normalized x_min, y_min, x_max, y_max, as displayed

# The transposition that turns a frame shown upright into the frame stored under a display rotation of
# `degrees` counter-clockwise (the viewer applies the opposite), and the one a viewer applies.
_STORED = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
_SHOWN = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class Clip:
    path: Path
    fps: int
    squares: list[Rect]  # where the square is in each frame, as displayed
    size: tuple[int, int]  # as displayed

    @property
    def duration(self) -> float:
        return len(self.squares) / self.fps

    def at(self, t: float) -> Rect:
        return self.squares[min(len(self.squares) - 1, round(t * self.fps))]


def moving_square(
    path: Path,
    *,
    frames: int = 48,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    side: int = 64,
    rotation: int = 0,
    audio: bool = False,
) -> Clip:
    """A red `side`-pixel square crossing a white frame left to right, displayed at `size`; stored turned
    when `rotation` (degrees counter-clockwise the viewer turns it) is set."""
    w, h = size
    squares: list[Rect] = []
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "veryfast"})
        video.width, video.height = (h, w) if rotation in (90, 270) else (w, h)
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        tone = out.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        for i in range(frames):
            x = round(16 + (w - side - 32) * i / max(1, frames - 1))
            y = (h - side) // 2
            squares.append((x / w, y / h, (x + side) / w, (y + side) / h))
            shown = Image.new("RGB", size, "white")
            ImageDraw.Draw(shown).rectangle([x, y, x + side - 1, y + side - 1], fill=(255, 0, 0))
            stored = shown.transpose(_STORED[rotation]) if rotation else shown
            frame = av.VideoFrame.from_image(stored)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if tone is not None:
            samples = frames * AUDIO_RATE // fps
            chunk = 1024
            for start in range(0, samples, chunk):
                n = min(chunk, samples - start)
                pcm = b"".join(
                    round(8000 * math.sin(2 * math.pi * 440 * (start + k) / AUDIO_RATE)).to_bytes(
                        2, "little", signed=True
                    )
                    for k in range(n)
                )
                block = av.AudioFrame(format="s16", layout="mono", samples=n)
                block.planes[0].update(pcm + bytes(block.planes[0].buffer_size - len(pcm)))
                block.sample_rate = AUDIO_RATE
                block.pts = start
                block.time_base = Fraction(1, AUDIO_RATE)
                out.mux(tone.encode(block))
            out.mux(tone.encode(None))
    return Clip(path=path, fps=fps, squares=squares, size=size)


@dataclass(frozen=True)
class Decoded:
    frames: list[Image.Image]  # as displayed
    times: list[float]
    fps: float
    duration: float | None
    audio_samples: int | None  # None: no audio stream


def decode(path: Path | str) -> Decoded:
    """Every frame as displayed (the display matrix applied as a player would), its time, and the audio."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        if duration is None and container.duration:  # Matroska keeps only the whole file's
            duration = container.duration / av.time_base
        fps = float(stream.average_rate or 0)
        frames, times = [], []
        for frame in container.decode(stream):
            turn = (round(frame.rotation / 90) * 90) % 360
            image = frame.to_image()
            frames.append(image.transpose(_SHOWN[turn]) if turn else image)
            times.append(float(frame.time or 0.0))
    audio_samples = None
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio_samples = sum(f.samples for f in container.decode(audio=0))
    return Decoded(frames, times, fps, duration, audio_samples)


def rgb(image: Image.Image) -> list[tuple[int, int, int]]:
    data = image.convert("RGB").tobytes()
    return [(data[i], data[i + 1], data[i + 2]) for i in range(0, len(data), 3)]


def pixels_inside(image: Image.Image, rect: Rect, inset: int = 3) -> list[tuple[int, int, int]]:
    w, h = image.size
    box = (
        round(rect[0] * w) + inset,
        round(rect[1] * h) + inset,
        round(rect[2] * w) - inset,
        round(rect[3] * h) - inset,
    )
    return rgb(image.crop(box))


def is_red(pixel: tuple[int, int, int]) -> bool:
    r, g, b = pixel
    return r > 150 and g < 110 and b < 110
