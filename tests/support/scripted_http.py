"""A tiny HTTP/1.1 server on a loopback address whose every answer a test scripts by hand.

Hand-rolled rather than uvicorn so tests can misbehave exactly: drip bytes, never finish, lie about
Content-Length, redirect anywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc

Handler = Callable[["Request", anyio.abc.ByteStream], Awaitable[None]]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class LoopbackServer:
    host: str
    port: int = 0
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        try:
            async with stream:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    head += await stream.receive()
                lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                fields = (line.partition(":") for line in lines[1:])
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                request = Request(method, path, headers)
                self.requests.append(request)
                await self.routes.get(path, not_found)(request, stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            pass  # the client hung up, which is often exactly what the test wanted


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def body(content: bytes, content_type: str = "image/png") -> Handler:
    async def handler(request: Request, stream: anyio.abc.ByteStream) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(content)), "Connection": "close"}
        await stream.send(_head("200 OK", headers) + content)

    return handler


def redirect(location: str, status: str = "302 Found") -> Handler:
    async def handler(request: Request, stream: anyio.abc.ByteStream) -> None:
        await stream.send(_head(status, {"Location": location, "Content-Length": "0", "Connection": "close"}))

    return handler


def endless(chunk: bytes = b"\0" * 65536) -> Handler:
    """A body with no declared length that never ends, sent as fast as the client reads."""

    async def handler(request: Request, stream: anyio.abc.ByteStream) -> None:
        await stream.send(_head("200 OK", {"Content-Type": "image/png", "Connection": "close"}))
        while True:
            await stream.send(chunk)

    return handler


def drip(interval: float) -> Handler:
    """A body that never ends, one byte per interval: each read succeeds, the whole never does."""

    async def handler(request: Request, stream: anyio.abc.ByteStream) -> None:
        await stream.send(_head("200 OK", {"Content-Type": "image/png", "Content-Length": "1000000"}))
        while True:
            await anyio.sleep(interval)  # the pace of the simulated slow server, not a wait on the test
            await stream.send(b"\0")

    return handler


def declares(length: int) -> Handler:
    """Announces a huge body, then sends nothing: only a client that believes the header stops early."""

    async def handler(request: Request, stream: anyio.abc.ByteStream) -> None:
        await stream.send(_head("200 OK", {"Content-Type": "image/png", "Content-Length": str(length)}))
        await anyio.sleep_forever()

    return handler


async def not_found(request: Request, stream: anyio.abc.ByteStream) -> None:
    await stream.send(_head("404 Not Found", {"Content-Length": "0", "Connection": "close"}))


@asynccontextmanager
async def serving(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[LoopbackServer]:
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        server = LoopbackServer(host, listener.extra(anyio.abc.SocketAttribute.local_port))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, server.handle)
            try:
                yield server
            finally:
                tasks.cancel_scope.cancel()
