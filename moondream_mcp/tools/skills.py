"""The five Moondream skills as MCP tools — caption, query, detect, point, segment."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import anyio
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from .. import shapes
from ..client import Sampling
from ..pictures import Picture
from ..state import AppState, Ctx
from ..vision import Answer, Caption, Detection, Pointing, Segmentation, corners
from . import bounds
from .pictures import SaveTo, with_picture
from .results import structured
from .schemas import NonEmpty
from .toolsets import Toolbox

# ---- parameters -------------------------------------------------------------------------------

ImageRef = Annotated[str, Field(description="Path or URL.")]
ObjectName = Annotated[NonEmpty, Field(max_length=bounds.OBJECT_CHARS, description="What to find.")]
Question = Annotated[NonEmpty, Field(max_length=bounds.TEXT_CHARS, description="Question.")]
Model = Annotated[str | None, Field(max_length=bounds.NAME_CHARS, description="Checkpoint.")]
Annotate = Annotated[bool, Field(description="Draw the results.")]
Length = Annotated[Literal["short", "normal", "long"], Field(description="Caption length.")]
Reasoning = Annotated[bool, Field(description="Reason first.")]
MaxObjects = Annotated[int | None, Field(ge=1, le=bounds.MAX_OBJECTS, description="Most boxes (default 50).")]
SpatialRefs = Annotated[
    list[Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=4)]] | None,
    Field(max_length=bounds.POINTS, description="Hint points or boxes."),
]
Temperature = Annotated[float | None, Field(ge=0, le=bounds.MAX_TEMPERATURE, description="Temperature.")]
TopP = Annotated[float | None, Field(gt=0, le=1, description="Top-p.")]
MaxTokens = Annotated[int | None, Field(gt=0, le=bounds.MAX_TOKENS, description="Most tokens.")]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

# ---- the tools --------------------------------------------------------------------------------


def draw_results(jpeg: bytes, **marks: Any) -> bytes:
    from ..annotate import draw  # Pillow loads with the first picture drawn, not with the server

    return draw(jpeg, **marks)


async def _result(
    state: AppState,
    output: BaseModel,
    drawing: partial[bytes] | None = None,
    save_to: str | None = None,
    kind: str = "",
) -> CallToolResult:
    if drawing is None:
        return structured(output)
    jpeg = await anyio.to_thread.run_sync(drawing)
    return await with_picture(state, output, Picture(jpeg, "image/jpeg", kind=kind), save_to)


def register(tools: Toolbox) -> None:
    @tools.tool("vision", read_only=True, title="Caption an image", annotations=READ_ONLY)
    async def caption(
        image: ImageRef,
        ctx: Ctx,
        length: Length = "normal",
        model: Model = None,
    ) -> Annotated[CallToolResult, Caption]:
        """Describe an image."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, _ = await state.vision.caption(
                image,
                length=length,
                model=model,
            )
        return await _result(state, output)

    @tools.tool("vision", read_only=True, title="Ask a question about an image", annotations=READ_ONLY)
    async def query(
        question: Question,
        ctx: Ctx,
        image: Annotated[str | None, Field(description="Path or URL.")] = None,
        reasoning: Reasoning = False,
        spatial_refs: SpatialRefs = None,
        model: Model = None,
    ) -> Annotated[CallToolResult, Answer]:
        """Answer a question about an image."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, _ = await state.vision.query(
                question,
                image,
                reasoning=reasoning,
                spatial_refs=spatial_refs,
                model=model,
            )
        return await _result(state, output)

    @tools.tool("vision", read_only=True, title="Find objects (bounding boxes)", annotations=READ_ONLY)
    async def detect(
        image: ImageRef,
        object: ObjectName,
        ctx: Ctx,
        max_objects: MaxObjects = None,
        model: Model = None,
        annotate: Annotate = False,
        save_to: SaveTo = None,
    ) -> Annotated[CallToolResult, Detection]:
        """Box every instance of an object."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, prepared = await state.vision.detect(
                image,
                object,
                model=model,
                sampling=Sampling(max_objects=max_objects),
            )
        boxes = [corners(b) for b in output.objects]
        drawing = partial(draw_results, prepared.jpeg, boxes=boxes) if annotate else None
        return await _result(state, output, drawing, save_to, "detect")

    @tools.tool("vision", read_only=True, title="Point at objects", annotations=READ_ONLY)
    async def point(
        image: ImageRef,
        object: ObjectName,
        ctx: Ctx,
        spatial_refs: SpatialRefs = None,
        model: Model = None,
        annotate: Annotate = False,
        save_to: SaveTo = None,
    ) -> Annotated[CallToolResult, Pointing]:
        """Point at every instance of an object."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, prepared = await state.vision.point(
                image,
                object,
                spatial_refs=spatial_refs,
                model=model,
            )
        drawing = partial(draw_results, prepared.jpeg, points=[(p.x, p.y) for p in output.points]) if annotate else None
        return await _result(state, output, drawing, save_to, "point")

    @tools.tool("vision", read_only=True, title="Outline an object (segmentation)", annotations=READ_ONLY)
    async def segment(
        image: ImageRef,
        object: ObjectName,
        ctx: Ctx,
        spatial_refs: SpatialRefs = None,
        model: Model = None,
        annotate: Annotate = False,
        save_to: SaveTo = None,
    ) -> Annotated[CallToolResult, Segmentation]:
        """Outline an object as SVG path data."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, prepared = await state.vision.segment(
                image,
                object,
                spatial_refs=spatial_refs,
                model=model,
            )
            rings = shapes.polygons(output.image_path) if annotate else []
        drawing = None
        if annotate:
            boxes = [corners(output.bbox)] if output.bbox else []
            drawing = partial(draw_results, prepared.jpeg, polygons=rings, boxes=boxes)
        return await _result(state, output, drawing, save_to, "segment")
