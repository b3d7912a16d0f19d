"""The MCP server over stdio, where every line gets an answer.

The SDK's stdio transport drops a line it cannot parse or validate (not JSON, a lone surrogate, nesting
past its parser's limit, `params` of the wrong type) with a debug log line, and the client waits for
an answer that never comes. So each line is screened here first, with the SDK's own parser, and one it
would drop is answered with the JSON-RPC error the spec asks for: -32700 for what does not parse,
-32600 for what is not a valid message, under the message's id when one can be read from it.
"""

from __future__ import annotations

import json
import sys
from io import TextIOWrapper
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import mcp.types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

if TYPE_CHECKING:
    from mcp.server import MCPServer

_DETAIL_CHARS = 200


def screen(line: str) -> types.JSONRPCError | None:
    """None for a line the SDK will take; otherwise the error that answers it."""
    try:
        parsed = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as exc:
        first = exc.errors()[0]
    else:
        # A request whose id is neither a string nor an integer passes as a notification: never answered.
        if isinstance(parsed, types.JSONRPCNotification) and "id" in json.loads(line):
            return _error(None, types.INVALID_REQUEST, "Invalid request: id must be a string or an integer")
        return None
    where = ".".join(str(part) for part in first["loc"])
    detail = (f"{where}: " if where else "") + first["msg"]
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        message = None
    raw_id = message.get("id") if isinstance(message, dict) else None
    # A bool is an int to Python, but not a valid id to JSON-RPC.
    request_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if first["type"] == "json_invalid":
        return _error(request_id, types.PARSE_ERROR, f"Parse error: {detail[:_DETAIL_CHARS]}")
    return _error(request_id, types.INVALID_REQUEST, f"Invalid request: {detail[:_DETAIL_CHARS]}")


def _error(request_id: str | int | None, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))


class _ScreenedLines:
    """The lines of stdin the SDK can read; the others are answered through `errors`."""

    def __init__(self, stdin: anyio.AsyncFile[str], errors: anyio.abc.ObjectSendStream[types.JSONRPCError]) -> None:
        self._stdin = stdin
        self._errors = errors

    def __aiter__(self) -> _ScreenedLines:
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self._stdin.readline()
            if not line:
                await self._errors.aclose()
                raise StopAsyncIteration
            if not line.strip():
                continue  # a blank line is no message at all
            error = screen(line)
            if error is None:
                return line
            await self._errors.send(error)


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve on stdin/stdout until stdin closes."""
    # The SDK runs a server on streams of one's own only through its low-level server.
    lowlevel = server._lowlevel_server
    send_errors, errors = anyio.create_memory_object_stream[types.JSONRPCError](max_buffer_size=16)
    # errors="replace": bytes that are not UTF-8 still make a line, which then fails to parse and is answered.
    text = TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    lines = _ScreenedLines(anyio.wrap_file(text), send_errors)
    try:
        async with stdio_server(stdin=cast("anyio.AsyncFile[str]", lines)) as (read_stream, write_stream):

            async def answer_errors() -> None:
                async with errors:
                    async for error in errors:
                        await write_stream.send(SessionMessage(error))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(answer_errors)
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
                tasks.cancel_scope.cancel()
    finally:
        text.detach()  # stdin's buffer is the process's, not this wrapper's to close
