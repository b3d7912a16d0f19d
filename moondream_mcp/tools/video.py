"""The video tools: find and follow an object through a clip (detect_video), hide objects in a new copy
(redact_video)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import anyio
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from ..failures import InputError
from ..files import OutputFile, os_failure
from ..outputs import save_own
from ..state import Ctx
from ..video import detection, redacting
from ..video.containers import container_for
from ..video.detection import VideoDetection
from ..video.errors import VideoError
from ..video.redacting import VideoRedaction
from ..video.sampling import Sampling
from ..video.source import video_source
from . import bounds
from .pictures import image_content
from .results import structured
from .skills import Model, ObjectName
from .toolsets import Toolbox

VideoRef = Annotated[str, Field(max_length=bounds.PATH_CHARS, description="Video path or URL.")]
EveryN = Annotated[int | None, Field(ge=1, le=bounds.FRAMES, description="Or every n-th frame.")]
MaxFrames = Annotated[int, Field(ge=1, le=10_000, description="Most frames sampled.")]
Start = Annotated[float, Field(ge=0, le=bounds.SECONDS, description="Start, in seconds.")]
End = Annotated[float | None, Field(gt=0, le=bounds.SECONDS, description="End, in seconds.")]
Output = Annotated[str, Field(max_length=bounds.PATH_CHARS)]

WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


async def _let_go(output: OutputFile | None) -> None:
    """An output still open when the call ends was never claimed: if this call created it, it goes."""
    if output is not None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(output.discard)


def register(tools: Toolbox) -> None:
    @tools.tool("video", read_only=False, title="Find and follow an object through a video", annotations=WRITES)
    async def detect_video(
        video: VideoRef,
        object: ObjectName,
        ctx: Ctx,
        skill: Annotated[Literal["detect", "point"], Field(description="Boxes or points.")] = "detect",
        fps: Annotated[float | None, Field(gt=0, le=120, description="Frames per second (default 1).")] = None,
        every_n_frames: EveryN = None,
        max_frames: MaxFrames = 300,
        start: Start = 0.0,
        end: End = None,
        model: Model = None,
        annotate: Annotated[bool, Field(description="Also return key frames.")] = False,
        output: Annotated[Output | None, Field(description="Per-frame JSONL; reruns resume.")] = None,
    ) -> Annotated[CallToolResult, VideoDetection]:
        """Find and track an object through a video, into a JSONL file."""
        state = ctx.request_context.lifespan_context
        jpeg: bytes | None = None
        with state.errors():
            sampling = Sampling(fps=fps, every_n_frames=every_n_frames, max_frames=max_frames, start=start, end=end)
            opened = await anyio.to_thread.run_sync(state.files.open_output, output) if output else None
            try:
                async with video_source(video, state.files, state.images) as source:
                    detected = await detection.detect_video(
                        source,
                        client=state.client,
                        skill=skill,
                        object=object,
                        sampling=sampling,
                        model=model,
                        output=opened,
                        files=state.files,
                        max_pixels=state.settings.max_image_pixels,
                        explain=state.explain,
                        progress=ctx.report_progress,
                    )
                    if annotate:
                        jpeg = await detection.draw_sheet(source, detected)
                summary = detected.summary
                if jpeg is not None:
                    name = f"{skill}-{detected.job}.jpg"
                    summary.sheet = str(
                        (await anyio.to_thread.run_sync(save_own, state.files, "video/sheets", name, jpeg)).path
                    )
            except OSError as exc:
                raise os_failure("write", "the results", exc) from None
            finally:
                await _let_go(opened)
        if jpeg is not None:
            return structured(summary, image_content(jpeg))
        return structured(summary)

    @tools.tool(
        "video",
        read_only=False,
        title="Blur, pixelate or box out objects in a video",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def redact_video(
        video: VideoRef,
        objects: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=bounds.OBJECT_CHARS)]],
            Field(min_length=1, max_length=8, description="What to hide."),
        ],
        output: Annotated[Output, Field(description="New .mp4, .mov or .mkv file.")],
        ctx: Ctx,
        style: Annotated[Literal["blur", "pixelate", "box"], Field(description="How to hide them.")] = "blur",
        fps: Annotated[float | None, Field(gt=0, le=120, description="Frames per second (default 2).")] = None,
        every_n_frames: EveryN = None,
        max_frames: MaxFrames = 600,
        start: Start = 0.0,
        end: End = None,
    ) -> Annotated[CallToolResult, VideoRedaction]:
        """Copy a video with objects hidden."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            sampling = Sampling(
                fps=fps if fps is not None or every_n_frames is not None else 2.0,
                every_n_frames=every_n_frames,
                max_frames=max_frames,
                start=start,
                end=end,
            )
            names = [name for name in dict.fromkeys(o.strip() for o in objects) if name]
            if not names:
                raise InputError("objects must name at least one thing to hide")
            fmt = container_for(Path(output.strip()))
            target = await anyio.to_thread.run_sync(state.files.open_output, output)
            try:
                if not target.created:
                    target.close()
                    raise VideoError(f"{target.label} already exists; choose a new output file.")
                async with video_source(video, state.files, state.images) as source:
                    redacted = await redacting.redact_video(
                        source,
                        client=state.client,
                        objects=names,
                        style=style,
                        sampling=sampling,
                        target=target,
                        fmt=fmt,
                        files=state.files,
                        max_pixels=state.settings.max_image_pixels,
                        explain=state.explain,
                        progress=ctx.report_progress,
                    )
            except OSError as exc:
                await _let_go(target)
                raise os_failure("write", target.label, exc) from None
            except BaseException:
                await _let_go(target)
                raise
            target.close()
        return structured(redacted.summary, image_content(redacted.sheet))
