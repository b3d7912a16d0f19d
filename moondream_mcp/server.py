"""build_server(settings): the MCP server, its lifespan and its transports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from mcp.server import MCPServer

from . import __version__
from .client import MoondreamClient
from .config import Settings
from .images import ImageLoader
from .store import Store
from .tools import batch, batch_api, skills, tuning

INSTRUCTIONS = """\
Moondream vision tools. Pass images as absolute file paths, file:// URLs, http(s) URLs or data URLs.
All coordinates are normalized 0-1 with the origin at the top-left of the image as displayed
(EXIF orientation applied); multiply by image.width / image.height for pixels.
Use detect for boxes and counts, point for locations, segment for outlines, query for questions,
caption for descriptions. Set annotate=true to get the image back with the results drawn on it."""


@dataclass
class AppState:
    """What the tools share for the server's lifetime."""

    settings: Settings
    client: MoondreamClient
    images: ImageLoader
    store: Store

    @property
    def secret(self) -> str | None:
        return self.settings.api_key.get_secret_value() if self.settings.api_key else None


def build_server(settings: Settings) -> MCPServer[AppState]:
    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                MoondreamClient(
                    endpoint=settings.endpoint,
                    api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                    timeout=settings.timeout,
                    retry_after_cap=settings.retry_after_cap,
                    rate_limit=settings.requests_per_second,
                )
            )
            images = await stack.enter_async_context(ImageLoader.from_settings(settings))
            store = await stack.enter_async_context(Store(settings.data_dir / "state.sqlite3"))
            await store.purge_rollout_sets(settings.rollout_ttl_hours * 3600)
            yield AppState(settings=settings, client=client, images=images, store=store)

    server: MCPServer[AppState] = MCPServer(
        "moondream",
        title="Moondream",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
    )
    skills.register(server)
    tuning.register(server)
    batch.register(server)
    batch_api.register(server)
    return server
