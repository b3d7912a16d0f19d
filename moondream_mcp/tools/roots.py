"""MCP roots: the directories a client offers are allowed too, besides (never instead of) the configured ones.

Before a connection's first tool call, and again after the client says its roots changed
(notifications/roots/list_changed), the server asks for them (roots/list) and hands the file:// ones
to the file guard. Roots exist on handshake-era connections; the 2026-07-28 protocol has none.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from ..state import AppState

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0  # seconds a client gets to list its roots before the call goes on without them
CONNECTIONS = 64  # connections whose roots are allowed at once


class ClientRoots:
    """Middleware keeping the file guard's extra directories in step with each connection's roots."""

    def __init__(self) -> None:
        self._current: OrderedDict[object, None] = OrderedDict()  # connections whose roots the guard has

    async def __call__(self, ctx: ServerRequestContext[AppState, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "notifications/roots/list_changed":
            self._current.pop(_connection(ctx), None)
        elif ctx.method == "tools/call" and _connection(ctx) not in self._current and _offers_roots(ctx):
            await self._refresh(ctx)
        return await call_next(ctx)

    async def _refresh(self, ctx: ServerRequestContext[AppState, Any]) -> None:
        key = _connection(ctx)
        self._current[key] = None  # before asking: a call arriving meanwhile need not ask again
        files = ctx.lifespan_context.files
        while len(self._current) > CONNECTIONS:
            # HTTP sessions end without a word: the oldest lose their roots (and ask again if they come back).
            gone, _ = self._current.popitem(last=False)
            files.set_extra_dirs(("roots", gone), ())
        try:
            with anyio.fail_after(ASK_TIMEOUT):
                listed = await ctx.session.send_request(types.ListRootsRequest(), types.ListRootsResult)
        except (MCPError, TimeoutError, ValidationError) as exc:
            # The call goes on with the directories allowed so far: roots only ever add to them.
            log.warning("the client did not list its roots: %s", type(exc).__name__)
            return
        dirs = [d for d in (_directory(str(root.uri)) for root in listed.roots) if d is not None]
        files.set_extra_dirs(("roots", key), dirs)
        log.info("client roots allowed: %s", ", ".join(map(str, dirs)) or "(none)")


def register(server: MCPServer[AppState]) -> None:
    server.middleware.append(ClientRoots())


def _connection(ctx: ServerRequestContext[AppState, Any]) -> object:
    """What tells one client's connection from another's: its HTTP session, or the one stdio connection."""
    headers = getattr(ctx.request, "headers", None)
    return headers.get("mcp-session-id") if headers is not None else None


def _offers_roots(ctx: ServerRequestContext[AppState, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.roots is not None and ctx.session.can_send_request


def _directory(uri: str) -> Path | None:
    """The local directory a file:// root names; None for any other root."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = urllib.request.url2pathname(parts.path)  # unquotes too
    if "\x00" in path or not os.path.isabs(path) or not os.path.isdir(path):
        return None
    return Path(path)
