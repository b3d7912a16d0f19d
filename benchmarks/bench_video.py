"""The video tools, printed as ratios from one run. Not a test.

detect_video: 100 sampled frames of a 640x360 clip against the emulator answering after 200 ms and allowing
10 requests/s per key (429 above it), with the server's rate limit at 10/s.
    achieved frames/s ÷ limit   [target >= 0.95, zero 429s]

redact_video on 1080p clips (a red square crossing a moving textured background) of 8 s and 32 s, each in
a fresh process, so that its peak resident memory is its own (the emulator, which keeps every request it
gets, runs in this one):
    frames written per second, and the same clip re-encoded plainly by PyAV (no sampling, no redaction)
    peak RSS of the 32 s clip ÷ peak RSS of the 8 s clip   [target ~1: memory does not grow with length]

Run: .venv/bin/python benchmarks/bench_video.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import anyio
import av
from harness import KEY, serving, settings
from mcp import Client
from PIL import Image, ImageDraw

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_mcp.server import build_server

LIMIT = 10.0
LATENCY = 0.2
SAMPLES = 100


def make_clip(path: Path, *, size: tuple[int, int], seconds: float, fps: int = 30) -> Path:
    """A red square crossing a slowly panning grainy background: real work for the encoder."""
    w, h = size
    grain = Image.effect_noise((w + 400, h), 18).point(lambda v: 170 + v // 4).convert("RGB")
    frames = round(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        side = h // 5
        for i in range(frames):
            shift = round(400 * i / max(1, frames - 1))
            image = grain.crop((shift, 0, shift + w, h))
            x = round(side + (w - 3 * side) * i / max(1, frames - 1))
            ImageDraw.Draw(image).rectangle([x, h // 2 - side // 2, x + side, h // 2 + side // 2], fill=(255, 0, 0))
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


async def rate(workdir: Path) -> None:
    seconds = 20.0
    clip = make_clip(workdir / "rate.mp4", size=(640, 360), seconds=seconds)
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY}), latency=LATENCY, rate_limit=LIMIT))
    async with serving(emulator, workdir, rate_limit=LIMIT) as client:
        start = time.perf_counter()
        result = await client.call_tool(
            "detect_video", {"video": str(clip), "object": "red", "fps": SAMPLES / seconds, "max_frames": SAMPLES}
        )
        elapsed = time.perf_counter() - start
    out = result.structured_content
    sampled = out["frames_sampled"]
    achieved = sampled / elapsed
    refused = sum(r.status == 429 for r in emulator.requests)
    print(
        f"detect_video, {sampled} sampled frames of a 640x360 30 fps clip, "
        f"latency {LATENCY * 1000:.0f} ms, limit {LIMIT:g}/s"
    )
    print(
        f"  {elapsed:6.2f} s  {achieved:5.2f} frames/s = {achieved / LIMIT:4.2f} x limit   429s {refused}, "
        f"failed {out['failed']}   [target >= 0.95]"
    )


async def redact_child(endpoint: str, clip: Path, output: Path) -> dict[str, float]:
    workdir = clip.parent
    async with Client(build_server(settings(endpoint, workdir))) as client:
        start = time.perf_counter()
        result = await client.call_tool(
            "redact_video", {"video": str(clip), "objects": ["red"], "style": "blur", "output": str(output)}
        )
        elapsed = time.perf_counter() - start
    if result.is_error:
        raise SystemExit(result.content[0].text)
    out = result.structured_content
    return {
        "elapsed": elapsed,
        "frames": out["frames_written"],
        "sampled": out["frames_sampled"],
        "redacted": out["frames_redacted"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def plain_child(clip: Path, output: Path) -> dict[str, float]:
    """The floor: the same decode and x264 encode, every frame passed straight through."""
    start = time.perf_counter()
    frames = 0
    with av.open(str(clip)) as source, av.open(str(output), "w") as out:
        video = source.streams.video[0]
        video.thread_type = "AUTO"
        stream = out.add_stream("libx264", rate=video.average_rate, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = video.codec_context.width, video.codec_context.height, "yuv420p"
        for frame in source.decode(video):
            out.mux(stream.encode(frame))
            frames += 1
        out.mux(stream.encode(None))
    return {
        "elapsed": time.perf_counter() - start,
        "frames": frames,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(kind: str, endpoint: str, clip: Path, output: Path) -> dict[str, float]:
    ran = subprocess.run(
        [sys.executable, __file__, kind, endpoint, str(clip), str(output)], check=True, capture_output=True, text=True
    )
    return json.loads(ran.stdout.strip().splitlines()[-1])


def redaction(workdir: Path) -> None:
    print("redact_video (blur), 1080p 30 fps; each run in a fresh process, the emulator (no latency) in another")
    peaks = {}
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({KEY})))) as running:
        for seconds in (8, 32):
            clip = make_clip(workdir / f"hd{seconds}.mp4", size=(1920, 1080), seconds=seconds)
            plain = child("plain", running.url, clip, workdir / f"plain{seconds}.mp4")
            redact = child("redact", running.url, clip, workdir / f"redacted{seconds}.mp4")
            report(seconds, redact, plain)
            peaks[seconds] = redact["peak_rss_mb"]
    ratio = peaks[32] / peaks[8]
    print(f"  peak RSS, 32 s clip ÷ 8 s clip: {ratio:4.2f}   [target ~1: bounded, not growing with length]")


def report(seconds: int, redact: dict[str, float], plain: dict[str, float]) -> None:
    fps, floor = redact["frames"] / redact["elapsed"], plain["frames"] / plain["elapsed"]
    print(
        f"  {seconds:2d} s ({redact['frames']:.0f} frames, {redact['sampled']:.0f} sampled, "
        f"{redact['redacted']:.0f} redacted): {redact['elapsed']:5.1f} s = {fps:5.1f} frames/s; "
        f"plain re-encode {floor:5.1f} frames/s ({fps / floor:4.2f}x); "
        f"peak RSS {redact['peak_rss_mb']:.0f} MB (plain {plain['peak_rss_mb']:.0f} MB)"
    )


def main() -> None:
    if len(sys.argv) == 5:
        kind, endpoint, clip, output = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        result = anyio.run(redact_child, endpoint, clip, output) if kind == "redact" else plain_child(clip, output)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(rate, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        redaction(Path(tmp))


if __name__ == "__main__":
    main()
