"""The five Moondream skills as MCP tools — caption, query, detect, point, segment — and the calls behind them."""

from __future__ import annotations

import base64
from functools import partial
from typing import TYPE_CHECKING, Annotated, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ImageContent, ToolAnnotations
from pydantic import BaseModel, Field

from .. import shapes
from ..annotate import draw as draw_results
from ..client import Sampling
from ..client.skills import Box as APIBox
from ..images import PreparedImage
from .errors import tool_errors
from .results import structured
from .skill_results import (
    Box,
    CaptionOutput,
    DetectOutput,
    Grounding,
    ImageSize,
    Point,
    PointOutput,
    QueryOutput,
    ReasoningOutput,
    SegmentOutput,
)

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from ..server import AppState

# ---- parameters -------------------------------------------------------------------------------

ImageRef = Annotated[
    str,
    Field(
        description="The image: an absolute file path (or ~/...), a file:// URL, an http(s) URL, "
        "or a data:image/...;base64 URL. Local files must be inside the allowed directories."
    ),
]
ObjectName = Annotated[
    str, Field(min_length=1, description='What to look for, in a few words, e.g. "person", "red car", "license plate".')
]
Model = Annotated[
    str | None,
    Field(description="A finetuned checkpoint, as returned by save_checkpoint: "
          "moondream3-preview/{finetune_id}@{step}. Omit for the base model."),
]
Annotate = Annotated[
    bool, Field(description="Also return the image (<= 1024 px) with the results drawn on it, to look at.")
]
Length = Annotated[Literal["short", "normal", "long"], Field(description="Caption length: short, normal or long.")]
Reasoning = Annotated[bool, Field(description="Let the model reason first; the reasoning comes back with the "
                                  "image points it looked at (grounding).")]
MaxObjects = Annotated[int | None, Field(gt=0, description="Most boxes to return (API default 50).")]
SpatialRefs = Annotated[
    list[Annotated[list[float], Field(min_length=2, max_length=4)]] | None,
    Field(description="Optional hints of where the object is: [x, y] points or [x_min, y_min, x_max, y_max] "
          "boxes, normalized 0-1."),
]
Temperature = Annotated[float | None, Field(ge=0, description="Sampling temperature (>= 0). Omit for the API default.")]
TopP = Annotated[float | None, Field(gt=0, le=1, description="Nucleus sampling top_p in (0, 1]. "
                                     "Omit for the API default.")]
MaxTokens = Annotated[int | None, Field(gt=0, description="Most tokens to generate. Omit for the API default.")]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

# ---- the calls, without MCP: shared by these tools and the batch tool --------------------------


def _size(prepared: PreparedImage) -> ImageSize:
    return ImageSize(width=prepared.width, height=prepared.height)


def _box(box: APIBox) -> Box:
    return Box(x_min=box.x_min, y_min=box.y_min, x_max=box.x_max, y_max=box.y_max)


async def run_caption(state: AppState, image: str, *, length: str = "normal", model: str | None = None,
                      sampling: Sampling | None = None) -> tuple[CaptionOutput, PreparedImage]:
    prepared = await state.images.load(image)
    result = await state.client.skills.caption(prepared.data_url, length=length, model=model,  # type: ignore[arg-type]
                                               settings=sampling)
    return CaptionOutput(caption=result.caption, finish_reason=result.finish_reason, request_id=result.request_id,
                         image=_size(prepared)), prepared


async def run_query(state: AppState, question: str, image: str | None = None, *, reasoning: bool = False,
                    model: str | None = None, sampling: Sampling | None = None
                    ) -> tuple[QueryOutput, PreparedImage | None]:
    prepared = await state.images.load(image) if image is not None else None
    result = await state.client.skills.query(question, image_url=prepared.data_url if prepared else None,
                                             reasoning=reasoning, model=model, settings=sampling)
    thought = None
    if result.reasoning is not None:
        thought = ReasoningOutput(text=result.reasoning.text, grounding=[
            Grounding(start_idx=g.start_idx, end_idx=g.end_idx, points=[Point(x=p.x, y=p.y) for p in g.points])
            for g in result.reasoning.grounding
        ])
    return QueryOutput(answer=result.answer, reasoning=thought, request_id=result.request_id,
                       image=_size(prepared) if prepared else None), prepared


async def run_detect(state: AppState, image: str, object: str, *, model: str | None = None,
                     sampling: Sampling | None = None) -> tuple[DetectOutput, PreparedImage]:
    prepared = await state.images.load(image)
    result = await state.client.skills.detect(prepared.data_url, object, model=model, settings=sampling)
    boxes = [_box(b) for b in result.objects]
    return DetectOutput(objects=boxes, count=len(boxes), request_id=result.request_id,
                        image=_size(prepared)), prepared


async def run_point(state: AppState, image: str, object: str, *, model: str | None = None,
                    sampling: Sampling | None = None) -> tuple[PointOutput, PreparedImage]:
    prepared = await state.images.load(image)
    result = await state.client.skills.point(prepared.data_url, object, model=model, settings=sampling)
    points = [Point(x=p.x, y=p.y) for p in result.points]
    return PointOutput(points=points, count=len(points), request_id=result.request_id,
                       image=_size(prepared)), prepared


async def run_segment(state: AppState, image: str, object: str, *, spatial_refs: list[list[float]] | None = None,
                      sampling: Sampling | None = None) -> tuple[SegmentOutput, PreparedImage]:
    prepared = await state.images.load(image)
    result = await state.client.skills.segment(prepared.data_url, object, spatial_refs=spatial_refs,
                                               settings=sampling)
    bbox = _box(result.bbox) if result.bbox is not None else None
    image_path = ""
    if bbox is not None and result.path:
        image_path = shapes.to_image_coordinates(result.path, (bbox.x_min, bbox.y_min, bbox.x_max, bbox.y_max))
    return SegmentOutput(path=result.path, bbox=bbox, image_path=image_path, request_id=result.request_id,
                         image=_size(prepared)), prepared


# ---- the tools --------------------------------------------------------------------------------


def _state(ctx: Context) -> AppState:
    return ctx.request_context.lifespan_context


async def _result(output: BaseModel, drawing: partial[bytes] | None = None) -> CallToolResult:
    if drawing is None:
        return structured(output)
    jpeg = await anyio.to_thread.run_sync(drawing)
    return structured(output, ImageContent(type="image", data=base64.b64encode(jpeg).decode(), mime_type="image/jpeg"))


def _corners(box: Box) -> tuple[float, float, float, float]:
    return box.x_min, box.y_min, box.x_max, box.y_max


def register(server: MCPServer[AppState]) -> None:
    @server.tool(title="Caption an image", annotations=READ_ONLY)
    async def caption(
        image: ImageRef, ctx: Context, length: Length = "normal", model: Model = None,
        temperature: Temperature = None, top_p: TopP = None, max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, CaptionOutput]:
        """Describe an image in words. Use for "what is in this photo?"; use query for specific questions."""
        state = _state(ctx)
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            output, _ = await run_caption(state, image, length=length, model=model,
                                          sampling=Sampling(temperature=temperature, top_p=top_p,
                                                            max_tokens=max_tokens))
        return await _result(output)

    @server.tool(title="Ask a question about an image", annotations=READ_ONLY)
    async def query(
        question: Annotated[str, Field(min_length=1, description="The question, in natural language.")],
        ctx: Context,
        image: Annotated[str | None, Field(description="The image to ask about (path, file://, http(s) or data "
                                           "URL). Omit for a text-only question.")] = None,
        reasoning: Reasoning = False, model: Model = None,
        temperature: Temperature = None, top_p: TopP = None, max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, QueryOutput]:
        """Answer a question about an image ("how many people?", "what does the sign say?").
        Grounding points in the reasoning are normalized 0-1, origin top-left of the displayed image."""
        state = _state(ctx)
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            output, _ = await run_query(state, question, image, reasoning=reasoning, model=model,
                                        sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens))
        return await _result(output)

    @server.tool(title="Find objects (bounding boxes)", annotations=READ_ONLY)
    async def detect(
        image: ImageRef, object: ObjectName, ctx: Context, max_objects: MaxObjects = None, model: Model = None,
        annotate: Annotate = False, temperature: Temperature = None, top_p: TopP = None, max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, DetectOutput]:
        """Find every instance of an object and return its bounding box; count = how many.
        Boxes are normalized 0-1 (x_min, y_min, x_max, y_max), origin top-left of the image as displayed
        (EXIF orientation applied); multiply by image.width / image.height for pixels."""
        state = _state(ctx)
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            output, prepared = await run_detect(state, image, object, model=model, sampling=Sampling(
                temperature=temperature, top_p=top_p, max_tokens=max_tokens, max_objects=max_objects))
        boxes = [_corners(b) for b in output.objects]
        drawing = partial(draw_results, prepared.jpeg, boxes=boxes) if annotate else None
        return await _result(output, drawing)

    @server.tool(title="Point at objects", annotations=READ_ONLY)
    async def point(
        image: ImageRef, object: ObjectName, ctx: Context, model: Model = None, annotate: Annotate = False,
        temperature: Temperature = None, top_p: TopP = None, max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, PointOutput]:
        """Return one point at the centre of each instance of an object; count = how many.
        Points are normalized 0-1 (x, y), origin top-left of the image as displayed (EXIF orientation
        applied); multiply by image.width / image.height for pixels."""
        state = _state(ctx)
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            output, prepared = await run_point(state, image, object, model=model, sampling=Sampling(
                temperature=temperature, top_p=top_p, max_tokens=max_tokens))
        drawing = partial(draw_results, prepared.jpeg, points=[(p.x, p.y) for p in output.points]) if annotate else None
        return await _result(output, drawing)

    @server.tool(title="Outline an object (segmentation)", annotations=READ_ONLY)
    async def segment(
        image: ImageRef, object: ObjectName, ctx: Context, spatial_refs: SpatialRefs = None,
        annotate: Annotate = False, temperature: Temperature = None, top_p: TopP = None, max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, SegmentOutput]:
        """Outline one object as an SVG path. `path` is exactly what the API returns: coordinates 0-1
        relative to `bbox`; `image_path` is the same outline in whole-image coordinates (0-1, origin
        top-left of the image as displayed). With annotate=true the mask is drawn filled on the image."""
        state = _state(ctx)
        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            output, prepared = await run_segment(state, image, object, spatial_refs=spatial_refs, sampling=Sampling(
                temperature=temperature, top_p=top_p, max_tokens=max_tokens))
            rings = shapes.polygons(output.image_path) if annotate else []
        drawing = None
        if annotate:
            boxes = [_corners(output.bbox)] if output.bbox else []
            drawing = partial(draw_results, prepared.jpeg, polygons=rings, boxes=boxes)
        return await _result(output, drawing)


__all__ = ["register", "run_caption", "run_detect", "run_point", "run_query", "run_segment"]
