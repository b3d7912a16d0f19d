"""A video re-encoded frame by frame with each frame passed through an edit: the same frames, timestamps,
size, display rotation and frame rate, the audio copied untouched (or re-encoded when the new container
cannot hold its codec). Blocking; one frame in memory at a time."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import av.error
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ..files import OutputFile
from .errors import VideoError
from .reading import Checkpoint, Frame, Reader
from .source import Source

# Visually lossless H.264 at a speed that keeps up with decoding 1080p on one or two cores.
X264 = {"crf": "18", "preset": "veryfast"}
_KEPT_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuv444p"})

Edit = Callable[[Frame], VideoFrame]  # each decoded frame in, the frame to encode out


@dataclass(frozen=True)
class Written:
    frames: int
    audio: bool


class _Output:
    """The output container, opened once the first frame says how the video is turned."""

    def __init__(self, file: BinaryIO, fmt: str, reader: Reader) -> None:
        self._file = file
        try:
            self.container: OutputContainer = av.open(self._file, "w", format=fmt)
        except BaseException:
            self._file.close()
            raise
        source = reader.stream
        rate = source.average_rate or source.guessed_rate or source.base_rate
        self.video: VideoStream = self.container.add_stream("libx264", rate=rate, options=dict(X264))
        self.video.width, self.video.height = source.codec_context.width, source.codec_context.height
        pix_fmt = source.codec_context.pix_fmt or "yuv420p"
        pix_fmt = pix_fmt if pix_fmt in _KEPT_FORMATS else "yuv420p"
        if pix_fmt == "yuv420p" and (self.video.width % 2 or self.video.height % 2):
            pix_fmt = "yuv444p"  # H.264 keeps 4:2:0 to even sizes only; some codecs (VP9) have odd ones
        self.video.pix_fmt = pix_fmt
        # The source's own time base: every frame keeps its exact timestamp, variable frame rates too.
        self.video.time_base = reader.time_base
        self.video.codec_context.time_base = reader.time_base
        if source.sample_aspect_ratio:
            self.video.sample_aspect_ratio = source.sample_aspect_ratio
        for attribute in ("color_range", "colorspace", "color_primaries", "color_trc"):
            value = getattr(source.codec_context, attribute, None)
            if value:
                try:
                    setattr(self.video.codec_context, attribute, value)
                except (AttributeError, ValueError, TypeError):
                    pass
        if reader.info.rotation:
            self.video.set_display_rotation(reader.info.rotation)
        self.audio_in: AudioStream | None = None
        self.audio_out: Any = None
        self.copy_audio = False
        if reader.container.streams.audio:
            self.audio_in = reader.container.streams.audio[0]
            name = self.audio_in.codec_context.name
            self.copy_audio = name in self.container.supported_codecs
            if self.copy_audio:
                self.audio_out = self.container.add_stream_from_template(self.audio_in)
            else:
                self.audio_out = self.container.add_stream(
                    "aac", rate=self.audio_in.rate, layout=self.audio_in.layout.name
                )

    def audio(self, packet: Packet) -> None:
        if self.audio_out is None:
            return
        if self.copy_audio:
            if packet.dts is None:  # the demuxer's end-of-stream marker
                return
            packet.stream = self.audio_out
            self.container.mux(packet)
        else:
            for frame in packet.decode():
                self.container.mux(self.audio_out.encode(frame))

    def frame(self, frame: VideoFrame) -> None:
        self.container.mux(self.video.encode(frame))

    def close(self) -> None:
        try:
            self.container.mux(self.video.encode(None))
            if self.audio_out is not None and not self.copy_audio:
                self.container.mux(self.audio_out.encode(None))
        finally:
            self.container.close()
            self._file.close()


def rewrite(
    source: Source,
    target: OutputFile,
    fmt: str,
    edit: Edit,
    *,
    checkpoint: Checkpoint | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> Written:
    """Write `target` (a file this call created, empty) from `source` as `fmt`, every frame passed through `edit`."""
    held: list[Packet] = []  # audio demuxed before the first video frame, until the output is open
    output: _Output | None = None

    def audio(packet: Packet) -> None:
        if output is None:
            held.append(packet)
        else:
            output.audio(packet)

    written = 0
    try:
        with Reader(source, checkpoint=checkpoint, other_packets=audio) as reader:
            output = _Output(os.fdopen(os.dup(target.fd), "wb"), fmt, reader)
            for packet in held:
                output.audio(packet)
            held.clear()
            try:
                for frame in reader.frames():
                    output.frame(edit(frame))
                    written += 1
                    if on_frame is not None:
                        on_frame(written)
            finally:
                output.close()
            return Written(frames=written, audio=output.audio_out is not None)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"the video could not be written: {exc}") from None
