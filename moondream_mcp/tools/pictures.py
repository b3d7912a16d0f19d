"""Pictures in tool results: each one an image content item, saved as a file (pictures.py), its path for the
structured result and a resource_link to it, so a client that drops or caps images can still open it."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink
from pydantic import BaseModel, Field

from ..files import FileError
from ..pictures import Picture
from ..state import AppState, Ctx
from . import bounds
from .results import structured

PICTURE_URI = "moondream://pictures/{name}"

SaveTo = Annotated[str | None, Field(max_length=bounds.PATH_CHARS, description="Picture folder.")]


def image_content(data: bytes, mime: str = "image/jpeg") -> ImageContent:
    """A picture as an image content item, inline."""
    return ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type=mime)


async def show(
    state: AppState, pictures: Sequence[Picture], save_to: str | None
) -> tuple[list[ContentBlock], list[str]]:
    """Content items for `pictures` (an image and a link to its saved file, for each) and the files' paths.

    Raises FileError when `save_to` is not a folder an agent may write in (state.errors() reports it)."""
    if save_to is not None and state.settings.read_only:
        # Read-only mode writes files only in the data directory.
        raise ToolError("the server is read-only: pictures are saved only in its data directory; omit save_to")
    saved = await anyio.to_thread.run_sync(lambda: [state.pictures.save(p, save_to) for p in pictures])
    blocks: list[ContentBlock] = []
    for item in saved:
        picture = item.picture
        blocks.append(image_content(picture.data, picture.mime))
        blocks.append(
            ResourceLink(
                type="resource_link",
                uri=PICTURE_URI.format(name=item.name),
                name=item.name,
                mime_type=picture.mime,
                size=len(picture.data),
                description=f"Saved as {item.path}",
            )
        )
    return blocks, [str(item.path) for item in saved]


async def with_picture(state: AppState, output: BaseModel, picture: Picture, save_to: str | None) -> CallToolResult:
    """The result of a tool that returns one picture: `output` with its `picture` field set to where the
    picture was saved, followed by the picture's content items."""
    with state.errors():
        blocks, paths = await show(state, [picture], save_to)
    return structured(output.model_copy(update={"picture": paths[0]}), *blocks)


def register(server: MCPServer[AppState]) -> None:
    # One template per media type: a template serves every resource it matches as one type.
    for suffix, mime in ((".jpg", "image/jpeg"), (".png", "image/png")):
        server.resource(
            PICTURE_URI.replace("{name}", "{name}" + suffix),
            name=f"picture{suffix}",
            title="Saved picture",
            mime_type=mime,
            description="A picture a tool returned (annotated result, crop or chart), as saved.",
        )(_reader(suffix))


def _reader(suffix: str) -> Callable[[str, Ctx], Awaitable[bytes]]:
    async def picture(name: str, ctx: Ctx) -> bytes:
        state = ctx.request_context.lifespan_context
        try:
            data, _ = await anyio.to_thread.run_sync(state.pictures.read, name + suffix)
        except FileError as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return data

    return picture
