"""The MCP server over stdio: every line answered, no line unbounded, no thread per message.

Answered: the SDK's stdio transport drops a line it cannot parse or validate (not JSON, a lone surrogate, nesting
past its parser's limit, `params` of the wrong type) with a debug log line, and the client waits for an answer
that never comes. So each line is screened here first, with the SDK's own parser, and one it would drop is
answered with the JSON-RPC error the spec asks for: -32700 for what does not parse, -32600 for what is not a valid
message, under the message's id when one can be read from it. A line longer than the largest request the server
takes (MOONDREAM_MCP_HTTP_MAX_BODY_BYTES) is answered -32600 and skipped without being held in memory.

No thread: the SDK reads and writes the standard streams in worker threads, a dozen thread switches per tool call,
which were most of the server's CPU per cached call. When stdin and stdout are pipes or sockets, as every MCP
client makes them, they are read and written here as the event loop finds them ready: a read returns what has
arrived, and a write of at most PIPE_BUF bytes fits once the pipe is writable, so neither blocks and the
descriptors stay in blocking mode, shared state untouched. Anything else (a terminal, a file) is read and written
in a worker thread.

As the SDK's transport does, the process's own fd 0 and fd 1 point at the null device and at stderr while it
serves, so nothing but protocol messages reaches the client on stdout; the wire is served from duplicates. On
Windows, stdout is left to the SDK's transport, which also re-points the process's standard handle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import stat
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import mcp.types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

if TYPE_CHECKING:
    from mcp.server import MCPServer

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

_DETAIL_CHARS = 200
_READ_BYTES = 256 * 1024
# A write this small to a pipe the poller calls writable never blocks (POSIX: PIPE_BUF writes are whole).
_WRITE_BYTES = getattr(select, "PIPE_BUF", 512)


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


class _TooLong:
    """In place of a line longer than the limit."""


TOO_LONG = _TooLong()


class Lines:
    """The lines of a stream of bytes read in chunks; a line over `limit` bytes is given as TOO_LONG, once, and
    its bytes are dropped as they come. A last line without a newline is a line too."""

    def __init__(self, read: Callable[[], Awaitable[bytes]], limit: int) -> None:
        self._read = read  # b"" at the end
        self._limit = limit
        self._buffer = bytearray()
        self._searched = 0  # the buffer holds no newline before this
        self._skipping = False
        self._ended = False

    async def next(self) -> bytes | _TooLong | None:
        """The next line, newline included; None at the end."""
        while True:
            newline = self._buffer.find(b"\n", self._searched)
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                self._searched = 0
                if self._skipping:
                    self._skipping = False  # the rest of a line already answered
                    continue
                return TOO_LONG if len(line) > self._limit else line
            self._searched = len(self._buffer)
            if len(self._buffer) > self._limit:
                self._buffer.clear()
                self._searched = 0
                if not self._skipping:
                    self._skipping = True
                    return TOO_LONG
            if self._ended:
                line, skipped = bytes(self._buffer), self._skipping
                self._buffer.clear()
                self._skipping = False
                return line if line and not skipped else None
            chunk = await self._read()
            if chunk:
                self._buffer += chunk
            else:
                self._ended = True


class _ScreenedLines:
    """The lines of stdin the SDK can read; the others are answered through `errors`. The end of stdin is passed on
    only once every error is answered (`answered` is set): the SDK closes stdout when it sees the end."""

    def __init__(
        self,
        lines: Lines,
        errors: anyio.abc.ObjectSendStream[types.JSONRPCError],
        answered: anyio.Event,
        limit: int,
    ) -> None:
        self._lines = lines
        self._errors = errors
        self._answered = answered
        self._limit = limit

    def __aiter__(self) -> _ScreenedLines:
        return self

    async def __anext__(self) -> str:
        while True:
            raw = await self._lines.next()
            if raw is None:
                await self._errors.aclose()
                await self._answered.wait()
                raise StopAsyncIteration
            if isinstance(raw, _TooLong):
                message = f"Invalid request: a message may be at most {self._limit} bytes"
                await self._errors.send(_error(None, types.INVALID_REQUEST, message))
                continue
            # errors="replace": bytes that are not UTF-8 still make a line, which then fails to parse and is answered.
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue  # a blank line is no message at all
            error = screen(line)
            if error is None:
                return line
            await self._errors.send(error)


class _Writer:
    """stdout as the SDK writes it: `write` sends the whole text before it returns, so `flush` has nothing to do.
    A client that has closed its end is gone: `gone` is called once, and what is written after is dropped."""

    def __init__(self, fd: int, polled: bool, gone: Callable[[], None]) -> None:
        self._fd = fd
        self._gone: Callable[[], None] | None = gone
        self._poll: select.poll | None = None
        if polled:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLOUT)

    async def write(self, text: str) -> None:
        if self._gone is None:
            return
        try:
            await self._write(memoryview(text.encode("utf-8")))
        except (BrokenPipeError, ConnectionResetError):
            gone, self._gone = self._gone, None
            gone()

    async def _write(self, data: memoryview) -> None:
        if self._poll is None:
            await anyio.to_thread.run_sync(_write_all, self._fd, data)
            return
        while data:
            # Asked of the kernel at once: a pipe with room (nearly always) costs no trip round the event loop.
            if not self._poll.poll(0):
                await anyio.wait_writable(self._fd)
            try:
                data = data[os.write(self._fd, data[:_WRITE_BYTES]) :]
            except BlockingIOError:
                continue

    async def flush(self) -> None:
        return None


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _polled(fd: int) -> bool:
    """Whether the event loop can wait on `fd` and then read or write it without blocking: a pipe or a Unix socket
    (what MCP clients give), on a POSIX system. A TCP socket's room for a write is not promised as a pipe's is."""
    if sys.platform == "win32":
        return False
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode):
            return True
        if not stat.S_ISSOCK(mode):
            return False
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.family == socket.AF_UNIX
    except OSError:
        return False


@contextmanager
def _claimed_standard_streams() -> Iterator[tuple[int, int]]:
    """Duplicates of fd 0 and fd 1 to serve the wire on, while fd 0 reads the null device and fd 1 writes to stderr."""
    sys.stdout.flush()
    # Above the standard descriptors, whichever of them is closed, and not inherited by child processes.
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        os.close(wire_in)
        raise
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
        os.dup2(2, 1)
        yield wire_in, wire_out
    finally:
        sys.stdout.flush()
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)
        # Left open when a worker thread may still be reading them: a number closed under a blocked read can be
        # reused for another file. The process ends soon after.
        if _polled(wire_in) and _polled(wire_out):
            os.close(wire_in)
            os.close(wire_out)


async def serve_stdio(server: MCPServer[Any], *, max_line_bytes: int) -> None:
    """Serve on stdin/stdout until stdin closes, or the client closes stdout."""
    # The SDK runs a server on streams of one's own only through its low-level server.
    lowlevel = server._lowlevel_server
    send_errors, errors = anyio.create_memory_object_stream[types.JSONRPCError](max_buffer_size=16)
    # On Windows the SDK claims stdout itself, which also re-points the process's standard handle; stdin is read
    # here, in a worker thread, as the SDK would.
    claimed: contextlib.AbstractContextManager[tuple[int, int | None]] = (
        contextlib.nullcontext((0, None)) if sys.platform == "win32" else _claimed_standard_streams()
    )
    with claimed as (wire_in, wire_out), anyio.CancelScope() as serving:

        def client_gone() -> None:
            log.info("the client closed stdout; stopping")
            serving.cancel()

        answered = anyio.Event()
        lines = Lines(_reader(wire_in), max_line_bytes)
        screened = _ScreenedLines(lines, send_errors, answered, max_line_bytes)
        writer = None if wire_out is None else _Writer(wire_out, _polled(wire_out), client_gone)
        async with stdio_server(
            stdin=cast("anyio.AsyncFile[str]", screened), stdout=cast("anyio.AsyncFile[str] | None", writer)
        ) as (read_stream, write_stream):

            async def answer_errors() -> None:
                try:
                    async with errors:
                        async for error in errors:
                            await write_stream.send(SessionMessage(error))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass  # the server is stopping: nothing more reaches the client
                finally:
                    answered.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(answer_errors)
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
                tasks.cancel_scope.cancel()


def _reader(fd: int) -> Callable[[], Awaitable[bytes]]:
    if not _polled(fd):
        return _ThreadReader(fd)

    async def read() -> bytes:
        while True:
            await anyio.wait_readable(fd)
            try:
                return os.read(fd, _READ_BYTES)
            except BlockingIOError:
                continue

    return read


class _ThreadReader:
    """Reads `fd` in a daemon thread of its own, for a terminal or a file: a terminal may never send another
    byte, and the process must not wait for one when it exits (it waits for anyio's worker threads)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._send, self._receive = anyio.create_memory_object_stream[bytes](1)
        self._started = False

    async def __call__(self) -> bytes:
        if not self._started:
            self._started = True
            token = anyio.lowlevel.current_token()
            threading.Thread(target=self._pump, args=(token,), name="stdin", daemon=True).start()
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return b""

    def _pump(self, token: anyio.lowlevel.EventLoopToken) -> None:
        while True:
            try:
                chunk = os.read(self._fd, _READ_BYTES)
            except OSError:
                chunk = b""
            try:
                anyio.from_thread.run(self._send.send, chunk, token=token)
            except Exception:
                return  # the event loop has gone, or no longer reads
            if not chunk:
                return
