"""The MCP server over streamable HTTP, guarded for a network where anyone may knock.

 connection ─> GuardedH11           at most MOONDREAM_MCP_HTTP_MAX_CONNECTIONS (the oldest still sending its
                                    request makes room); headers and body each sent within a time limit
    request ─> RequireBearerToken   401 unless `Authorization: Bearer <MOONDREAM_MCP_TOKEN>` (when a token is set)
            ─> LimitBody            413 for a body over MOONDREAM_MCP_HTTP_MAX_BODY_BYTES
            ─> SessionPool          at most MOONDREAM_MCP_HTTP_MAX_SESSIONS: a new one closes the longest idle
            ─> the SDK's app        Host / Origin checked against the address served (DNS-rebinding protection)

A token is required whenever the server listens beyond loopback: the tools read the user's files and
spend the user's API key, so an open port would hand both to the whole network. Log lines are
throttled (LogThrottle), so that a flood of bad requests cannot flood the disk as well.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import sys
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from .config import Settings

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
REALM = "moondream-mcp"
UNAUTHORIZED = -32001  # JSON-RPC's range for server-defined errors


class HTTPConfigError(Exception):
    """The HTTP transport cannot start as configured; the message says what to change."""


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    bare = host.strip().strip("[]").lower()
    if bare == "localhost" or bare.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        return False


def _host_header(name: str, port: int) -> list[str]:
    shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
    # Browsers and most clients leave the default port out of the Host header.
    return [f"{shown}:{port}", shown] if port in (80, 443) else [f"{shown}:{port}"]


def allowed_hosts(host: str, port: int, extra: list[str]) -> list[str]:
    """The Host header values a request may carry: the address served, loopback names, and `extra`."""
    names: list[str] = []
    if is_loopback(host) or _is_wildcard(host):
        names += ["127.0.0.1", "localhost", "::1"]
    if _is_wildcard(host):
        # Clients on the network name this machine somehow; its own names are the likely ones.
        # Any other name (a DNS alias, an IP) must be listed in MOONDREAM_MCP_ALLOWED_HOSTS.
        hostname = socket.gethostname()
        names += [hostname, socket.getfqdn(hostname)]
    else:
        names.append(host.strip().strip("[]"))
    values = [value for name in dict.fromkeys(n for n in names if n) for value in _host_header(name, port)]
    return list(dict.fromkeys([*values, *extra]))


def security_settings(host: str, port: int, extra_hosts: list[str]) -> TransportSecuritySettings:
    hosts = allowed_hosts(host, port, extra_hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        # A browser page may only talk to the server from an origin it is served at.
        allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")],
    )


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class RequireBearerToken:
    """401 for any HTTP request without the configured bearer token; a None token lets everything through."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # MCP has no websocket transport here; nothing may reach the app around the token check.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http" or self._token is None:
            await self.app(scope, receive, send)
            return
        given = _bearer(_header(scope, b"authorization"))
        # compare_digest: how long the comparison takes says nothing about how much of the token matched.
        if given is not None and hmac.compare_digest(given, self._token):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        reason = "no bearer token" if given is None else "a wrong bearer token"
        log.warning("refused an HTTP request from %s: %s", client[0], reason)
        challenge = f'Bearer realm="{REALM}"' + ("" if given is None else ', error="invalid_token"')
        description = f"send Authorization: Bearer <token> with the server's MOONDREAM_MCP_TOKEN ({reason} was given)"
        # A JSON-RPC error body: MCP clients show its message instead of a bare "error response". The
        # OAuth-style code goes in the challenge header and in the error's data.
        await _respond(
            send,
            401,
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": UNAUTHORIZED,
                    "message": f"unauthorized: {description}",
                    "data": {"error": "invalid_token" if given is not None else "unauthorized"},
                },
            },
            [(b"www-authenticate", challenge.encode())],
        )


def _bearer(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None
    return credentials.strip()


class LimitBody:
    """413 for a request body over `max_bytes`, judged from Content-Length and again from the bytes read.

    Defence in depth: the SDK bounds bodies too, but only on the paths it serves, and its bound is
    sized for small JSON-RPC messages while image data URLs need more.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        # Read the body up front (it is bounded), so a chunked body with no length is judged too.
        chunks: list[bytes] = []
        size = 0
        pending: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                pending = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = []
        if chunks or pending is None:
            replay.append({"type": "http.request", "body": b"".join(chunks), "more_body": False})
        if pending is not None:
            replay.append(pending)  # the client went away mid-body: let the app see it too

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send) -> None:
        await _respond(
            send,
            413,
            {
                "error": "request_too_large",
                "error_description": f"the request body is over {self.max_bytes} bytes; pass large images as file "
                "paths or URLs, or raise MOONDREAM_MCP_HTTP_MAX_BODY_BYTES",
            },
            [(b"connection", b"close")],
        )


class SessionPool:
    """At most `max_sessions` MCP sessions. A new one beyond that closes the session idle the longest (none
    of its requests in flight), as its client would with DELETE; 503 only while every session is busy.

    The SDK's own cap refuses new sessions until old ones expire, so whoever opens many sessions (a
    client that never closes its own, or a flood) would lock every other client out until then.
    """

    def __init__(self, app: ASGIApp, max_sessions: int) -> None:
        self.app = app
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, int] = OrderedDict()  # id -> requests in flight, least recent first

    @property
    def open(self) -> int:
        return len(self._sessions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"mcp-session-id")
        session = given.decode("latin-1") if given is not None else None
        if session is not None and session in self._sessions:
            self._sessions[session] += 1
            self._sessions.move_to_end(session)
            try:
                await self.app(scope, receive, self._watching(send, session))
            finally:
                if session in self._sessions:
                    self._sessions[session] -= 1
            if scope["method"] == "DELETE":
                self._sessions.pop(session, None)
            return
        if session is None and len(self._sessions) >= self.max_sessions and not await self._close_idlest(scope):
            log.warning("refused a new MCP session: all %d sessions are busy", self.max_sessions)
            await _respond(
                send,
                503,
                {"error": "too_many_sessions", "error_description": "every session is busy; try again shortly"},
                [(b"retry-after", b"5")],
            )
            return
        await self.app(scope, receive, self._watching(send, session))

    def _watching(self, send: Send, session: str | None) -> Send:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened = dict(message.get("headers") or []).get(b"mcp-session-id")
                if session is None and opened is not None and message["status"] < 400:
                    self._sessions[opened.decode("latin-1")] = 0
                elif session is not None and message["status"] == 404:
                    self._sessions.pop(session, None)  # expired inside the SDK, or closed
            await send(message)

        return watched

    async def _close_idlest(self, scope: Scope) -> bool:
        idlest = next((s for s, busy in self._sessions.items() if busy == 0), None)
        if idlest is None:
            return False
        del self._sessions[idlest]
        # Closed the way its client would close it, so the SDK frees it by its own rules.
        keep = (b"host", b"origin", b"authorization", b"mcp-protocol-version")
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() in keep]
        closing = {**scope, "method": "DELETE", "headers": [*headers, (b"mcp-session-id", idlest.encode())]}
        status = 0

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(closing, nothing, answered)
        if status in (200, 202, 204, 404):
            log.info("closed the MCP session idle the longest to make room for a new one")
            return True
        self._sessions[idlest] = 0
        self._sessions.move_to_end(idlest, last=False)
        return False


def http_app(server: MCPServer[Any], settings: Settings, *, host: str, port: int) -> ASGIApp:
    """The ASGI app serving `server` at /mcp, for a listener on host:port."""
    token = settings.token.get_secret_value() if settings.token else None
    if token is None and not is_loopback(host):
        raise HTTPConfigError(
            f"refusing to serve on {host}, which is reachable from other machines, without a token: "
            "set MOONDREAM_MCP_TOKEN to a long random secret (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`) and send it as `Authorization: Bearer <token>`, "
            "or serve on 127.0.0.1."
        )
    inner = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=settings.http_max_body_bytes,
        transport_security=security_settings(host, port, settings.http_allowed_hosts),
        host=host,
        session_idle_timeout=settings.http_session_idle_timeout,
        # A backstop only: SessionPool keeps below it, closing idle sessions rather than refusing new ones.
        max_sessions=settings.http_max_sessions + 16,
    )
    sessions = SessionPool(inner, settings.http_max_sessions)
    return RequireBearerToken(LimitBody(sessions, settings.http_max_body_bytes), token)


def serve_http(server: MCPServer[Any], settings: Settings, *, host: str, port: int, started: str = "") -> None:
    """Serve until interrupted; logs go to stderr like every other log line. `started` is written to stderr
    once the configuration is accepted."""
    import uvicorn

    from .http_connections import throttle_logs, uvicorn_options

    app = http_app(server, settings, host=host, port=port)
    if started:
        sys.stderr.write(started + "\n")
    if not is_loopback(host):
        log.warning(
            "serving MCP over plain HTTP on %s:%d; put a TLS-terminating proxy in front of it when the "
            "network is not trusted",
            host,
            port,
        )
    shown = f"[{host}]" if ":" in host else host
    log.info("MCP endpoint: http://%s:%d%s", shown, port, MCP_PATH)
    throttle_logs()
    # log_config=None: uvicorn's records go through the root logger, to stderr.
    uvicorn.run(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),
    )
