"""Streamable HTTP: a bearer token, Host/Origin checks and a bounded body guard a server any machine may reach."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from moondream_emulator.serve import serving_app
from moondream_mcp import cli
from moondream_mcp.config import Settings
from moondream_mcp.http_transport import HTTPConfigError, allowed_hosts, http_app, is_loopback
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY
from tests.support.pictures import assert_box, canvas, save

pytestmark = pytest.mark.anyio

TOKEN = "t0k3n-for-tests-0123456789abcdef"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@contextmanager
def serving(settings: Settings, host: str = "127.0.0.1") -> Iterator[str]:
    """The server over HTTP on a free port of 127.0.0.1, as `serve --transport http --host HOST` builds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # only to learn a free port: the app's allowed Host values are built from it
    app = http_app(build_server(settings), settings, host=host, port=port)
    with serving_app(app, port=port, lifespan="on") as origin:
        yield f"{origin}/mcp"


@pytest.fixture
def with_token(settings: Settings) -> Settings:
    return settings.model_copy(update={"token": SecretStr(TOKEN)})


@asynccontextmanager
async def connected(url: str, headers: dict[str, str], mode: str = "auto") -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def post(
    url: str, *, headers: dict[str, str] | None = None, content: bytes | None = None, json: object = INITIALIZE
) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        if content is not None:
            return await http.post(url, headers={**MCP_HEADERS, **(headers or {})}, content=content)
        return await http.post(url, headers={**MCP_HEADERS, **(headers or {})}, json=json)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_with_the_token_lists_and_calls_tools_over_http(
    with_token: Settings, workdir: Path, mode: str
) -> None:
    image = save(canvas(), workdir / "square.png")
    with serving(with_token) as url, anyio.fail_after(60):
        async with connected(url, {"Authorization": f"Bearer {TOKEN}"}, mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool("detect", {"image": image, "object": "red"})

    assert {"caption", "query", "detect", "point", "segment"} <= {t.name for t in tools.tools}
    assert not result.is_error
    assert_box(result.structured_content["objects"][0], (0.25, 0.2, 0.5, 0.6))


async def test_a_request_without_a_token_is_refused_with_401(with_token: Settings) -> None:
    with serving(with_token) as url, anyio.fail_after(30):
        response = await post(url)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="moondream-mcp"'
    body = response.json()
    assert (body["jsonrpc"], body["id"], body["error"]["data"]) == ("2.0", None, {"error": "unauthorized"})
    assert "MOONDREAM_MCP_TOKEN" in body["error"]["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {API_KEY}",
    ],
)
async def test_a_wrong_token_is_refused_with_401(with_token: Settings, authorization: str) -> None:
    with serving(with_token) as url, anyio.fail_after(30):
        response = await post(url, headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="moondream-mcp"')
    assert TOKEN not in response.text


def leaves(group: BaseExceptionGroup) -> list:
    return [leaf for e in group.exceptions for leaf in (leaves(e) if isinstance(e, BaseExceptionGroup) else [e])]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_the_sdk_client_without_the_token_is_told_why_it_cannot_connect(
    with_token: Settings, mode: str, headers: dict[str, str]
) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    with serving(with_token) as url, anyio.fail_after(30):
        async with httpx2.AsyncClient(headers=headers, event_hooks={"response": [record]}, timeout=30) as http:
            refused: list[MCPError] = []
            try:
                async with Client(streamable_http_client(url, http_client=http), mode=mode):
                    pass
            except* MCPError as group:  # the SDK may wrap it in its task group's exception group
                refused += leaves(group)

    assert statuses and set(statuses) == {401}
    assert len(refused) == 1
    assert "unauthorized" in str(refused[0]) and "MOONDREAM_MCP_TOKEN" in str(refused[0])


async def test_a_spoofed_host_header_is_refused_against_dns_rebinding(with_token: Settings) -> None:
    # A page on evil.example whose name was re-pointed at 127.0.0.1 reaches the server with its own Host.
    with serving(with_token) as url, anyio.fail_after(30):
        spoofed = await post(url, headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"})
        foreign_origin = await post(url, headers={"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"})
        honest = await post(url, headers={"Authorization": f"Bearer {TOKEN}", "Origin": url.removesuffix("/mcp")})

    assert (spoofed.status_code, spoofed.text) == (421, "Invalid Host header")
    assert (foreign_origin.status_code, foreign_origin.text) == (403, "Invalid Origin header")
    assert honest.status_code == 200


async def exchange(url: str, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read until the server closes: the status and body it answered."""
    port = int(url.split(":")[2].split("/")[0])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        answer = b""
        try:
            while True:
                answer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def head(lines: list[str]) -> bytes:
    return (
        "\r\n".join(
            [
                "POST /mcp HTTP/1.1",
                "Host: 127.0.0.1",
                "Accept: application/json, text/event-stream",
                "Content-Type: application/json",
                *lines,
            ]
        )
        + "\r\n\r\n"
    ).encode()


async def test_an_oversized_body_is_refused_with_413(with_token: Settings) -> None:
    # Raw sockets: a client that writes its whole body before reading (httpx2 does) would see the early
    # answer as a reset connection, which says nothing about what the server did.
    settings = with_token.model_copy(update={"http_max_body_bytes": 64 * 1024})
    auth = f"Authorization: Bearer {TOKEN}"
    with serving(settings) as url, anyio.fail_after(30):
        declared = await exchange(url, head([auth, "Content-Length: 1000000000"]))
        # No Content-Length: the limit must hold on the bytes themselves.
        chunk = b"[" + b" " * (64 * 1024) + b"]"
        streamed = await exchange(
            url, head([auth, "Transfer-Encoding: chunked"]) + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        )

    assert declared[0] == 413 and b'"request_too_large"' in declared[1]
    assert streamed[0] == 413 and b'"request_too_large"' in streamed[1]


async def test_an_unauthenticated_oversized_body_gets_401_not_413(with_token: Settings) -> None:
    # Strangers learn nothing about the server's limits, and their bodies are never read.
    settings = with_token.model_copy(update={"http_max_body_bytes": 64 * 1024})
    with serving(settings) as url, anyio.fail_after(30):
        status, _ = await exchange(url, head(["Content-Length: 1000000000"]))

    assert status == 401


async def test_on_loopback_a_token_is_optional(settings: Settings, workdir: Path) -> None:
    image = save(canvas(), workdir / "square.png")
    with serving(settings) as url, anyio.fail_after(60):
        async with connected(url, {}) as client:
            result = await client.call_tool("point", {"image": image, "object": "red"})

    assert not result.is_error


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "mybox.example"])
def test_serving_beyond_loopback_without_a_token_is_refused(settings: Settings, host: str) -> None:
    with pytest.raises(HTTPConfigError) as caught:
        http_app(build_server(settings), settings, host=host, port=8000)

    assert f"refusing to serve on {host}" in str(caught.value) and "MOONDREAM_MCP_TOKEN" in str(caught.value)


def test_serve_http_on_all_interfaces_without_a_token_exits_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("MOONDREAM_MCP_TOKEN", "MOONDREAM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["moondream-mcp"])
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--transport", "http", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])

    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "refusing to serve on 0.0.0.0" in err and "MOONDREAM_MCP_TOKEN" in err


def test_beyond_loopback_with_a_token_the_app_is_built(with_token: Settings) -> None:
    assert callable(http_app(build_server(with_token), with_token, host="0.0.0.0", port=8000))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.evil.com", False),
    ],
)
def test_loopback_is_recognised_by_address_and_name(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_allowed_hosts_follow_the_address_served() -> None:
    assert allowed_hosts("127.0.0.1", 8123, []) == ["127.0.0.1:8123", "localhost:8123", "[::1]:8123"]
    assert allowed_hosts("mybox.lan", 80, ["alias.lan:*"]) == ["mybox.lan:80", "mybox.lan", "alias.lan:*"]
    everywhere = allowed_hosts("0.0.0.0", 9000, [])
    assert everywhere[:3] == ["127.0.0.1:9000", "localhost:9000", "[::1]:9000"]
    assert f"{socket.gethostname()}:9000" in everywhere


def test_host_and_port_without_the_http_transport_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # A --host meant for HTTP must not silently start a stdio server instead.
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--host", "0.0.0.0"])

    assert exited.value.code == 2
    assert capsys.readouterr().err == "moondream-mcp: --host and --port are for --transport http\n"
