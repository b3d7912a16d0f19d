"""The MCP server over streamable HTTP, guarded for a network where anyone may knock.

    request ─> RequireBearerToken   401 unless `Authorization: Bearer <MOONDREAM_MCP_TOKEN>` (when a token is set)
            ─> LimitBody            413 for a body over MOONDREAM_MCP_HTTP_MAX_BODY_BYTES
            ─> the SDK's app        Host / Origin checked against the address served (DNS-rebinding protection)

A token is required whenever the server listens beyond loopback: the tools read the user's files and
spend the user's API key, so an open port would hand both to the whole network.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import sys
from typing import TYPE_CHECKING, Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from .config import Settings

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
REALM = "moondream-mcp"


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


async def _respond(send: Send, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]]) -> None:
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
        await _respond(
            send,
            401,
            {
                "error": "invalid_token" if given is not None else "unauthorized",
                "error_description": f"send Authorization: Bearer <token> with the server's MOONDREAM_MCP_TOKEN "
                f"({reason} was given)",
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
    )
    return RequireBearerToken(LimitBody(inner, settings.http_max_body_bytes), token)


def serve_http(server: MCPServer[Any], settings: Settings, *, host: str, port: int, started: str = "") -> None:
    """Serve until interrupted; logs go to stderr like every other log line. `started` is written to stderr
    once the configuration is accepted."""
    import uvicorn

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
    # log_config=None: uvicorn's records go through the root logger, to stderr.
    uvicorn.run(app, host=host, port=port, lifespan="on", log_config=None, timeout_graceful_shutdown=5)
