"""The five Moondream skills as MCP tools — caption, query, detect, point, segment."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

import anyio
from mcp.server import MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from .. import shapes
from ..annotate import draw as draw_results
from ..client import Sampling
from ..pictures import Picture
from ..state import AppState, Ctx
from ..vision import Answer, Caption, Detection, Pointing, Segmentation, corners
from . import bounds
from .pictures import SaveTo, show
from .results import structured

# ---- parameters -------------------------------------------------------------------------------

ImageRef = Annotated[
    str,
    Field(
        description="The image: an absolute file path (or ~/...), a file:// URL, an http(s) URL, "
        "or a data:image/...;base64 URL. Local files must be inside the allowed directories."
    ),
]
ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=bounds.OBJECT_CHARS,
        description='What to look for, in a few words, e.g. "person", "red car", "license plate".',
    ),
]
Question = Annotated[
    str, Field(min_length=1, max_length=bounds.TEXT_CHARS, description="The question, in natural language.")
]
Model = Annotated[
    str | None,
    Field(
        max_length=bounds.NAME_CHARS,
        description="A finetuned checkpoint, as returned by save_checkpoint: "
        "moondream3-preview/{finetune_id}@{step}. Omit for the base model.",
    ),
]
Annotate = Annotated[
    bool, Field(description="Also return the image (<= 1024 px) with the results drawn on it, to look at.")
]
Length = Annotated[Literal["short", "normal", "long"], Field(description="Caption length: short, normal or long.")]
Reasoning = Annotated[
    bool,
    Field(
        description="Let the model reason first; the reasoning comes back with the "
        "image points it looked at (grounding)."
    ),
]
MaxObjects = Annotated[
    int | None, Field(gt=0, le=bounds.MAX_OBJECTS, description="Most boxes to return (API default 50).")
]
SpatialRefs = Annotated[
    list[Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=4)]] | None,
    Field(
        max_length=bounds.POINTS,
        description="Optional hints of where to look: [x, y] points or [x_min, y_min, x_max, y_max] "
        "boxes, normalized 0-1.",
    ),
]
Temperature = Annotated[
    float | None,
    Field(ge=0, le=bounds.MAX_TEMPERATURE, description="Sampling temperature, 0-2. Omit for the API default."),
]
TopP = Annotated[
    float | None, Field(gt=0, le=1, description="Nucleus sampling top_p in (0, 1]. Omit for the API default.")
]
MaxTokens = Annotated[
    int | None, Field(gt=0, le=bounds.MAX_TOKENS, description="Most tokens to generate. Omit for the API default.")
]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

# ---- the tools --------------------------------------------------------------------------------


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
    with state.errors():
        blocks, paths = await show(state, [Picture(jpeg, "image/jpeg", kind=kind)], save_to)
    return structured(output.model_copy(update={"picture": paths[0]}), *blocks)


def register(server: MCPServer[AppState]) -> None:
    @server.tool(title="Caption an image", annotations=READ_ONLY)
    async def caption(
        image: ImageRef,
        ctx: Ctx,
        length: Length = "normal",
        model: Model = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, Caption]:
        """Describe an image in words. Use for "what is in this photo?"; use query for specific questions."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, _ = await state.vision.caption(
                image,
                length=length,
                model=model,
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            )
        return await _result(state, output)

    @server.tool(title="Ask a question about an image", annotations=READ_ONLY)
    async def query(
        question: Question,
        ctx: Ctx,
        image: Annotated[
            str | None,
            Field(
                description="The image to ask about (path, file://, http(s) or data "
                "URL). Omit for a text-only question."
            ),
        ] = None,
        reasoning: Reasoning = False,
        spatial_refs: SpatialRefs = None,
        model: Model = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, Answer]:
        """Answer a question about an image ("how many people?", "what does the sign say?").
        Grounding points in the reasoning are normalized 0-1, origin top-left of the displayed image."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, _ = await state.vision.query(
                question,
                image,
                reasoning=reasoning,
                spatial_refs=spatial_refs,
                model=model,
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            )
        return await _result(state, output)

    @server.tool(title="Find objects (bounding boxes)", annotations=READ_ONLY)
    async def detect(
        image: ImageRef,
        object: ObjectName,
        ctx: Ctx,
        max_objects: MaxObjects = None,
        model: Model = None,
        annotate: Annotate = False,
        save_to: SaveTo = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, Detection]:
        """Find every instance of an object and return its bounding box; count = how many.
        Boxes are normalized 0-1 (x_min, y_min, x_max, y_max), origin top-left of the image as displayed
        (EXIF orientation applied); multiply by image.width / image.height for pixels."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, prepared = await state.vision.detect(
                image,
                object,
                model=model,
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, max_objects=max_objects),
            )
        boxes = [corners(b) for b in output.objects]
        drawing = partial(draw_results, prepared.jpeg, boxes=boxes) if annotate else None
        return await _result(state, output, drawing, save_to, "detect")

    @server.tool(title="Point at objects", annotations=READ_ONLY)
    async def point(
        image: ImageRef,
        object: ObjectName,
        ctx: Ctx,
        spatial_refs: SpatialRefs = None,
        model: Model = None,
        annotate: Annotate = False,
        save_to: SaveTo = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, Pointing]:
        """Return one point at the centre of each instance of an object; count = how many.
        Points are normalized 0-1 (x, y), origin top-left of the image as displayed (EXIF orientation
        applied); multiply by image.width / image.height for pixels."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, prepared = await state.vision.point(
                image,
                object,
                spatial_refs=spatial_refs,
                model=model,
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            )
        drawing = partial(draw_results, prepared.jpeg, points=[(p.x, p.y) for p in output.points]) if annotate else None
        return await _result(state, output, drawing, save_to, "point")

    @server.tool(title="Outline an object (segmentation)", annotations=READ_ONLY)
    async def segment(
        image: ImageRef,
        object: ObjectName,
        ctx: Ctx,
        spatial_refs: SpatialRefs = None,
        model: Model = None,
        annotate: Annotate = False,
        save_to: SaveTo = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Annotated[CallToolResult, Segmentation]:
        """Outline one object as an SVG path. `path` is exactly what the API returns: coordinates 0-1
        relative to `bbox`; `image_path` is the same outline in whole-image coordinates (0-1, origin
        top-left of the image as displayed). With annotate=true the mask is drawn filled on the image."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, prepared = await state.vision.segment(
                image,
                object,
                spatial_refs=spatial_refs,
                model=model,
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            )
            rings = shapes.polygons(output.image_path) if annotate else []
        drawing = None
        if annotate:
            boxes = [corners(output.bbox)] if output.bbox else []
            drawing = partial(draw_results, prepared.jpeg, polygons=rings, boxes=boxes)
        return await _result(state, output, drawing, save_to, "segment")
