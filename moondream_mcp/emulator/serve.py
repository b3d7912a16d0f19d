"""Running the emulator with uvicorn: in a background thread for tests, or in the foreground from the CLI."""

from __future__ import annotations

import argparse
import copy
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvicorn.config

from .app import Emulator, EmulatorConfig

KEYS_ENV = "MOONDREAM_EMULATOR_KEYS"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@dataclass
class RunningEmulator:
    emulator: Emulator
    url: str  # base URL of the API, ending in /v1


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is accepting connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _listening_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    # Listening before uvicorn starts: the port is known at once, and early connections wait in the backlog.
    sock.listen(128)
    return sock


def _origin(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@contextmanager
def serving_app(app: Any, *, host: str = "127.0.0.1", port: int = 0, lifespan: str = "off") -> Iterator[str]:
    """Serve any ASGI app on host:port (0: any free port) in a background thread; yields its origin URL."""
    sock = _listening_socket(host, port)
    # log_config=None: leave the process's logging alone (pytest captures uvicorn's records as they are).
    config = uvicorn.Config(app, lifespan=lifespan, log_config=None, access_log=False, timeout_graceful_shutdown=1)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="asgi-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.ready.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
        yield _origin(sock)
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        sock.close()


@contextmanager
def running_emulator(
    emulator: Emulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningEmulator]:
    """Serve an emulator on host:port (0: any free port) in a background thread while the block runs."""
    emulator = emulator if emulator is not None else Emulator()
    with serving_app(emulator.app, host=host, port=port) as origin:
        yield RunningEmulator(emulator=emulator, url=f"{origin}/v1")


def config_from_args(
    keys: str | None = None,
    *,
    no_auth: bool = False,
    latency: float = 0.0,
    rate_limit: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> EmulatorConfig:
    """An EmulatorConfig from CLI values; `keys` is comma-separated, falling back to $MOONDREAM_EMULATOR_KEYS."""
    if keys is None:
        keys = (os.environ if environ is None else environ).get(KEYS_ENV, "")
    accepted = frozenset(key.strip() for key in keys.split(",") if key.strip())
    return EmulatorConfig(keys=accepted, no_auth=no_auth, latency=latency, rate_limit=rate_limit)


def serve_forever(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve an emulator in the foreground until interrupted; all logging goes to stderr."""
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    # stdout may be someone's protocol stream; uvicorn's access log defaults to it.
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    uvicorn.run(Emulator(config).app, host=host, port=port, lifespan="off", log_config=log_config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags, for any parser that runs it."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2021, help="port to listen on (default 2021)")
    parser.add_argument(
        "--keys", default=None, help=f"comma-separated accepted API keys (default ${KEYS_ENV}; none: any)"
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="behave like Moondream Station: no key, errors as 200"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second per key (default none)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="moondream-mcp emulator", description="A local Moondream API emulator."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(
        args.keys, no_auth=args.no_auth, latency=args.latency, rate_limit=args.rate_limit
    )
    serve_forever(args.host, args.port, config)
