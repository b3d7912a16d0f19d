"""Streamable HTTP: a bearer token, Host/Origin checks and a bounded body guard a server any machine may reach."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import anyio.abc
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from moondream_emulator.serve import serving_app
from moondream_mcp import cli, http_connections
from moondream_mcp.config import Settings
from moondream_mcp.http_connections import LogThrottle, uvicorn_options
from moondream_mcp.http_transport import HTTPConfigError, allowed_hosts, http_app, is_loopback
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY
from tests.support.pictures import assert_box, canvas, save
from tests.support.stdio import server_env

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
    with serving_app(app, port=port, lifespan="on", **uvicorn_options(settings)) as origin:
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


# ---- under load: half-open and slow connections, many sessions, malformed messages ---------------------------

HALF_SENT = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"  # no blank line: never ends


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


async def closed_by_server(stream: anyio.abc.SocketStream) -> bool:
    """Read until the server closes the connection; True once it has."""
    try:
        while await stream.receive():
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return True
    return True


async def initialize(url: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(url, headers=MCP_HEADERS, json=INITIALIZE)


async def test_a_request_whose_headers_never_end_is_closed_after_the_header_timeout(settings: Settings) -> None:
    quick = settings.model_copy(update={"http_header_timeout": 0.5})
    with serving(quick) as url, anyio.fail_after(30):
        async with await anyio.connect_tcp("127.0.0.1", port_of(url)) as stream:
            await stream.send(HALF_SENT)
            assert await closed_by_server(stream)


async def test_a_body_that_never_ends_is_closed_after_the_body_timeout(settings: Settings) -> None:
    quick = settings.model_copy(update={"http_body_timeout": 0.5})
    with serving(quick) as url, anyio.fail_after(30):
        async with await anyio.connect_tcp("127.0.0.1", port_of(url)) as stream:
            await stream.send(head(["Content-Length: 1000"]) + b'{"jsonrpc":')
            assert await closed_by_server(stream)
        assert (await initialize(url)).status_code == 200


async def test_half_sent_requests_beyond_the_connection_cap_cannot_lock_real_clients_out(settings: Settings) -> None:
    capped = settings.model_copy(update={"http_max_connections": 16})
    with serving(capped) as url, anyio.fail_after(60):
        streams = [await anyio.connect_tcp("127.0.0.1", port_of(url)) for _ in range(60)]
        try:
            for stream in streams:
                await stream.send(HALF_SENT)
            answered = await initialize(url)
            # The oldest idle connections made room, each for a newer one: 44 of the 60 are gone.
            for stream in streams[:44]:
                assert await closed_by_server(stream)
        finally:
            for stream in streams:
                await stream.aclose()

    assert answered.status_code == 200


async def test_a_long_answer_is_not_cut_short_by_the_request_timeouts(
    settings: Settings, workdir: Path, emulator
) -> None:
    quick = settings.model_copy(update={"http_header_timeout": 0.3, "http_body_timeout": 0.3})
    image = save(canvas(), workdir / "square.png")
    emulator.emulator.config.latency = 1.0
    try:
        with serving(quick) as url, anyio.fail_after(60):
            async with connected(url, {}) as client:
                result = await client.call_tool("detect", {"image": image, "object": "red"})
    finally:
        emulator.emulator.config.latency = 0.0

    assert not result.is_error


async def test_a_flood_of_sessions_cannot_lock_new_clients_out(settings: Settings, workdir: Path) -> None:
    # Sessions opened and never closed; the SDK's own cap would refuse every new client until they expire.
    few = settings.model_copy(update={"http_max_sessions": 8})
    image = save(canvas(), workdir / "square.png")
    with serving(few) as url, anyio.fail_after(60):
        flood = [(await initialize(url)).headers["mcp-session-id"] for _ in range(30)]
        async with connected(url, {}) as client:
            result = await client.call_tool("point", {"image": image, "object": "red"})
        async with httpx2.AsyncClient(timeout=30) as http:
            oldest = await http.post(url, headers={**MCP_HEADERS, "mcp-session-id": flood[0]}, json=INITIALIZE)
            newest = await http.post(
                url,
                headers={**MCP_HEADERS, "mcp-session-id": flood[-1], "mcp-protocol-version": "2025-06-18"},
                json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
            )

    assert not result.is_error
    assert oldest.status_code == 404  # closed to make room, as its client would have closed it
    assert newest.status_code == 200


def test_idle_sessions_expire_after_the_configured_time(settings: Settings) -> None:
    brief = settings.model_copy(update={"http_session_idle_timeout": 42.0})
    server = build_server(brief)
    http_app(server, brief, host="127.0.0.1", port=8000)

    assert server.session_manager.session_idle_timeout == 42.0


MALFORMED = {
    "not json": (b"{nope", -32700),
    "a lone surrogate": (b'{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"\\ud800"}}', -32700),
    "very deep nesting": (
        b'{"jsonrpc":"2.0","id":4,"method":"ping","params":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        -32700,
    ),
    "params a list": (b'{"jsonrpc":"2.0","id":5,"method":"initialize","params":[1,2]}', -32602),
    "no method": (b'{"jsonrpc":"2.0","id":11}', -32602),
}


async def test_a_malformed_message_over_http_gets_an_error_answer(settings: Settings) -> None:
    answers = {}
    with serving(settings) as url, anyio.fail_after(60):
        for attack, (body, _) in MALFORMED.items():
            response = await post(url, content=body)
            answers[attack] = (response.status_code, response.json()["error"]["code"])

    assert answers == {attack: (400, code) for attack, (_, code) in MALFORMED.items()}


async def test_a_non_finite_argument_over_http_gets_a_clean_tool_error(settings: Settings) -> None:
    with serving(settings) as url, anyio.fail_after(30):
        async with httpx2.AsyncClient(timeout=30) as http:
            opened = await http.post(url, headers=MCP_HEADERS, json=INITIALIZE)
            session = {
                **MCP_HEADERS,
                "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": "2025-06-18",
            }
            await http.post(url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            arguments = b'{"image":"/x.png","object":"cat","max_objects":1e309}'
            body = (
                b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"detect","arguments":%s}}' % arguments
            )
            answered = await http.post(url, headers=session, content=body)

    event = json.loads(answered.text.split("data: ", 1)[1])
    assert event["result"]["isError"] is True
    assert event["result"]["content"][0]["text"] == (
        "invalid argument max_objects: Infinity is not a number a tool can take; give a finite number."
    )


async def test_a_flood_of_half_sent_requests_neither_locks_clients_out_nor_floods_the_log(
    emulator, workdir: Path, tmp_path: Path
) -> None:
    # The console script as deployed, with few file descriptors: without a connection cap, 300 half-sent
    # requests exhaust them, no one else is accepted, and asyncio logs a traceback at every accept.
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    env = {**server_env(emulator, workdir, tmp_path), "MOONDREAM_MCP_HTTP_MAX_CONNECTIONS": "64"}
    launch = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)); "
        f"sys.argv = ['moondream-mcp', 'serve', '--transport', 'http', '--port', '{port}']; "
        "runpy.run_module('moondream_mcp', run_name='__main__')"
    )
    logged = bytearray()
    listening = anyio.Event()
    streams: list[anyio.abc.SocketStream] = []

    async def drain(stderr: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stderr:
            logged.extend(chunk)
            if b"Uvicorn running" in logged:
                listening.set()

    async with (
        await anyio.open_process(
            [sys.executable, "-c", launch], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
        ) as process,
        anyio.create_task_group() as tasks,
    ):
        assert process.stderr is not None
        tasks.start_soon(drain, process.stderr)
        try:
            with anyio.fail_after(60):
                await listening.wait()
                for _ in range(300):
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    await stream.send(HALF_SENT)
                    streams.append(stream)
                answered = await initialize(url=f"http://127.0.0.1:{port}/mcp")
        finally:
            for stream in streams:
                await stream.aclose()
            process.terminate()
            with anyio.fail_after(15):
                await process.wait()

    assert answered.status_code == 200
    assert len(logged) < 50_000, bytes(logged[-3000:]).decode()


def test_a_flood_of_alike_log_lines_is_throttled_and_what_was_dropped_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(http_connections.time, "monotonic", lambda: clock[0])
    throttle = LogThrottle(burst=3, window=60)
    records = [
        logging.LogRecord("asyncio", logging.ERROR, __file__, 1, f"Exception in callback\nhandle: when={i}", None, None)
        for i in range(1000)
    ]

    passed = [r for r in records[:500] if throttle.filter(r)]
    clock[0] += 61
    after_a_minute = [r for r in records[500:] if throttle.filter(r)]

    assert len(passed) == 3
    assert len(after_a_minute) == 3
    assert after_a_minute[0].getMessage().endswith("[497 more like this dropped]")
