"""build_server(settings): the MCP server, its lifespan and its transports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from mcp.server import MCPServer

from . import __version__
from .client import MoondreamClient
from .config import Settings
from .failures import Explainer
from .files import FileGuard
from .images import ImageLoader
from .state import AppState
from .store import Store
from .tools import batch_api, datasets, evaluation, guides, local_batch, runs, skills, tuning
from .tools.arguments import refuse_non_finite
from .training import Runner

INSTRUCTIONS = """\
Moondream vision tools. Pass images as absolute file paths, file:// URLs, http(s) URLs or data URLs.
All coordinates are normalized 0-1 with the origin at the top-left of the image as displayed
(EXIF orientation applied); multiply by image.width / image.height for pixels.
Use detect for boxes and counts, point for locations, segment for outlines, query for questions,
caption for descriptions. Set annotate=true to get the image back with the results drawn on it."""


def build_server(
    settings: Settings, *, images: Callable[[Settings, FileGuard], ImageLoader] = ImageLoader.from_settings
) -> MCPServer[AppState]:
    """The server, configured by `settings`.

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
                )
            )
            files = FileGuard.from_settings(settings)
            loader = await stack.enter_async_context(images(settings, files))
            store = await stack.enter_async_context(Store(settings.data_dir / "state.sqlite3"))
            await store.purge_rollout_sets(settings.rollout_ttl_hours * 3600)
            secret = settings.api_key.get_secret_value() if settings.api_key else None
            # Entered last, so it exits first: runs are cancelled (and resume on the next start) before the
            # client and the store they use are closed. Entering it resumes the runs left running.
            runner = await stack.enter_async_context(
                Runner(
                    store=store,
                    client=client,
                    images=loader,
                    runs_dir=settings.data_dir / "runs",
                    explain=Explainer(endpoint=settings.endpoint, secret=secret),
                ).serving()
            )
            yield AppState(settings=settings, client=client, files=files, images=loader, store=store, runner=runner)

    server: MCPServer[AppState] = MCPServer(
        "moondream",
        title="Moondream",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        middleware=[refuse_non_finite],
    )
    skills.register(server)
    tuning.register(server)
    local_batch.register(server)
    batch_api.register(server)
    datasets.register(server)
    runs.register(server)
    evaluation.register(server)
    guides.register(server)
    return server


def serve(settings: Settings, *, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server until interrupted: on stdio (stdout carries protocol messages only) or streamable HTTP."""
    server = build_server(settings)
    if transport == "stdio":
        import anyio

        from .stdio_transport import serve_stdio

        anyio.run(serve_stdio, server)
        return
    from .http_transport import serve_http

    serve_http(server, settings, host=host, port=port)
