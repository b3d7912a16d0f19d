"""zoom: crops of an image at up to full resolution, found by detect or given as boxes (zoom.py)."""

from __future__ import annotations

from typing import Annotated

from mcp.types import CallToolResult
from pydantic import Field

from .. import zoom as zooming
from ..pictures import BUDGET, Picture
from ..state import Ctx
from . import bounds
from .pictures import SaveTo, show
from .results import structured
from .schemas import NonEmpty
from .skills import READ_ONLY, ImageRef
from .toolsets import Toolbox


def register(tools: Toolbox) -> None:
    @tools.tool("vision", read_only=True, title="Zoom in on an image", annotations=READ_ONLY)
    async def zoom(
        image: ImageRef,
        ctx: Ctx,
        object: Annotated[NonEmpty | None, Field(max_length=bounds.OBJECT_CHARS, description="What to crop.")] = None,
        boxes: Annotated[
            list[Annotated[list[bounds.Coordinate], Field(min_length=4, max_length=4)]] | None,
            Field(max_length=zooming.MAX_CROPS, description="Or boxes to crop."),
        ] = None,
        max_crops: Annotated[int, Field(ge=1, le=zooming.MAX_CROPS, description="Most crops.")] = 3,
        padding: Annotated[float, Field(ge=0, le=1, description="Margin, times box size.")] = 0.1,
        save_to: SaveTo = None,
    ) -> Annotated[CallToolResult, zooming.Zoom]:
        """Full-resolution crops of what `object` finds, or of `boxes`."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            output, jpegs = await zooming.zoom(
                state.client,
                state.images,
                image,
                object=object,
                boxes=boxes,
                max_crops=max_crops,
                padding=padding,
                budget=BUDGET,
            )
            blocks, paths = await show(state, [Picture(j, "image/jpeg", kind="zoom") for j in jpegs], save_to)
        crops = [c.model_copy(update={"path": p}) for c, p in zip(output.crops, paths, strict=True)]
        return structured(output.model_copy(update={"crops": crops}), *blocks)
