"""build_server(settings): the MCP server, its lifespan and its transports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from . import __version__, emulated
from .client import MoondreamClient
from .config import Settings
from .failures import Explainer, invalid_arguments
from .files import FileGuard
from .images import ImageLoader
from .state import AppState
from .store import Store
from .tools import (
    ask,
    batch_api,
    datasets,
    evaluation,
    guides,
    labelling,
    local_batch,
    pictures,
    roots,
    runs,
    skills,
    tuning,
    video,
    zoom,
)
from .tools.arguments import refuse_non_finite
from .training import Runner

INSTRUCTIONS = """\
Moondream vision tools. Pass images as absolute file paths, file:// URLs, http(s) URLs or data URLs.
All coordinates are normalized 0-1 with the origin at the top-left of the image as displayed
(EXIF orientation applied); multiply by image.width / image.height for pixels.
Use detect for boxes and counts, point for locations, segment for outlines, query for questions,
caption for descriptions, ask for one question about several images, zoom to look closer (crops at full
resolution). Set annotate=true to get the image back with the results drawn on it."""


class _Server(MCPServer[AppState]):
    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            # Arguments that do not fit the schema: said for the model, without pydantic's report and links.
            if isinstance(exc.__cause__, ValidationError):
                message = invalid_arguments(name, exc.__cause__)
                raise ToolError(f"Error executing tool {name}: {message}") from exc.__cause__
            raise


def build_server(
    settings: Settings,
    *,
    images: Callable[[Settings, FileGuard], ImageLoader] = ImageLoader.from_settings,
    emulated_api: bool = False,
) -> MCPServer[AppState]:
    """The server, configured by `settings`. `emulated_api`: the endpoint is the built-in emulator, and
    the instructions and every tool result say so (see emulated.py).

    `images` builds the image loader. A test seam, and the only one: tests of URL guards pass a loader
    whose address policy treats one loopback server as a public host, since nothing public is reachable.
    """

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
                    train_timeout=settings.train_timeout,
                )
            )
            files = FileGuard.from_settings(settings)
            loader = await stack.enter_async_context(images(settings, files))
            store = await stack.enter_async_context(Store(settings.data_dir / "state.sqlite3"))
            await store.purge_rollout_sets(settings.rollout_ttl_hours * 3600)
            # Entered last, so it exits first: runs are cancelled (and resume on the next start) before the
            # client and the store they use are closed. Entering it resumes the runs left running.
            runner = await stack.enter_async_context(
                Runner(
                    store=store,
                    client=client,
                    images=loader,
                    files=files,
                    explain=Explainer(endpoint=settings.shown_endpoint, secrets=settings.secrets),
                ).serving()
            )
            yield AppState(settings=settings, client=client, files=files, images=loader, store=store, runner=runner)

    server: MCPServer[AppState] = _Server(
        "moondream",
        title="Moondream",
        instructions=emulated.instructions(INSTRUCTIONS) if emulated_api else INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        middleware=[refuse_non_finite, emulated.mark_results] if emulated_api else [refuse_non_finite],
    )
    skills.register(server)
    ask.register(server)
    zoom.register(server)
    tuning.register(server)
    local_batch.register(server)
    batch_api.register(server)
    datasets.register(server)
    runs.register(server)
    evaluation.register(server)
    guides.register(server)
    labelling.register(server)
    pictures.register(server)
    roots.register(server)
    video.register(server)
    return server


def serve(
    settings: Settings,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    emulated_api: bool = False,
) -> None:
    """Run the server until interrupted: on stdio (stdout carries protocol messages only) or streamable HTTP."""
    server = build_server(settings, emulated_api=emulated_api)
    if transport == "stdio":
        import anyio

        from .stdio_transport import serve_stdio

        anyio.run(serve_stdio, server)
        return
    from .http_transport import serve_http

    serve_http(server, settings, host=host, port=port)
