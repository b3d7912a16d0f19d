"""build_server(settings): the MCP server, its lifespan and its transports."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mcp.server import MCPServer, NotificationOptions
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
from .tools.listing import ListedServer
from .tools.toolsets import Toolbox, ToolsetError
from .training import Runner

__all__ = ["MoondreamServer", "ToolsetError", "build_server", "public_url", "serve", "startup_line"]

# In the data directory: the tool list kept between starts.
LISTING_FILE = "tool-list.json"
INSTRUCTIONS = """\
Moondream vision tools. Pass images as absolute file paths, file:// URLs, http(s) URLs or data URLs.
All coordinates are normalized 0-1 with the origin at the top-left of the image as displayed
(EXIF orientation applied); multiply by image.width / image.height for pixels.
Use detect for boxes and counts, point for locations, segment for outlines, query for questions,
caption for descriptions, ask for one question about several images, zoom to look closer (crops at full
resolution). Set annotate=true to get the image back with the results drawn on it.
To use a finetuned checkpoint, pass its model string (moondream3-preview/<finetune_id>@<step>, as
list_checkpoints and training_status give it) as `model`."""


def build_server(
    settings: Settings,
    *,
    images: Callable[[Settings, FileGuard], ImageLoader] = ImageLoader.from_settings,
    emulated_api: bool = False,
    listing: Path | None = None,
) -> MoondreamServer:
    """The server, configured by `settings`; ToolsetError if it names toolsets that do not exist.
    `emulated_api`: the endpoint is the built-in emulator, and the instructions and every tool result say so
    (see emulated.py). `listing`: the file that keeps the tool list between starts (tools/listing.py); without
    it every start builds every listed tool.

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

    server = MoondreamServer(
        "moondream",
        title="Moondream",
        instructions=emulated.instructions(INSTRUCTIONS) if emulated_api else INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        middleware=[refuse_non_finite, emulated.mark_results] if emulated_api else [refuse_non_finite],
        listing=listing,
    )
    tools = Toolbox()
    # Registered in the order they are listed: the vision tools first, as an agent reaches for them first.
    for module in (skills, ask, zoom, tuning, local_batch, batch_api, datasets, runs, evaluation, labelling, video):
        module.register(tools)
    server.toolsets = tools.choose(settings.toolsets)
    server.offered = tools.serve(server, server.toolsets, read_only=settings.read_only)
    if "enable_toolset" in server.offered:
        _announce_tool_list_changes(server)
    guides.register(server)
    pictures.register(server)
    roots.register(server)
    return server


class MoondreamServer(ListedServer):
    """The SDK's server with tools built when first needed (tools/listing.py), knowing which toolsets it started
    with, and telling argument errors in sentences."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.toolsets: list[str] = []
        self.offered: list[str] = []  # the tools listed at start

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


def _announce_tool_list_changes(server: MCPServer[AppState]) -> None:
    # MCPServer has no setting for it: handshake-era clients learn that the tool list can change only from the
    # tools.listChanged capability, which comes from the options the SDK builds for every connection.
    lowlevel = server._lowlevel_server
    lowlevel.create_initialization_options = partial(  # type: ignore[method-assign]
        lowlevel.create_initialization_options, NotificationOptions(tools_changed=True)
    )


def serve(
    settings: Settings,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    emulated_api: bool = False,
) -> None:
    """Run the server until interrupted: on stdio (stdout carries protocol messages only) or streamable HTTP."""
    server = build_server(settings, emulated_api=emulated_api, listing=settings.data_dir / LISTING_FILE)
    if transport == "stdio":
        import anyio

        from .stdio_transport import serve_stdio

        sys.stderr.write(startup_line(server, settings, "stdio") + "\n")
        anyio.run(partial(serve_stdio, server, max_line_bytes=settings.http_max_body_bytes))
        return
    from .http_transport import MCP_PATH, serve_http

    shown = f"[{host}]" if ":" in host else host
    serve_http(
        server,
        settings,
        host=host,
        port=port,
        started=startup_line(server, settings, f"http://{shown}:{port}{MCP_PATH}"),
    )


def startup_line(server: MoondreamServer, settings: Settings, transport: str) -> str:
    """One line for a person watching the terminal: what runs, where it is reached, what it may touch."""
    parts = [
        f"moondream-mcp {__version__} on {transport}",
        f"toolsets {', '.join(server.toolsets)} ({len(server.offered)} tools)",
        *(["read-only"] if settings.read_only else []),
        f"endpoint {public_url(settings.endpoint)}",
        f"allowed dirs {os.pathsep.join(str(d) for d in settings.allowed_dirs) or '(none)'}",
    ]
    return "; ".join(parts) + "; waiting for a client"


def public_url(url: str) -> str:
    """`url` without what may be secret in it: user and password, query and fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
