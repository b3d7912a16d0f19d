"""Running the emulator with uvicorn: in a background thread (tests, benchmarks, an in-process demo) or in
the foreground (the command line)."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
import uvicorn.config

from .app import Emulator, EmulatorConfig

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
def serving_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: Literal["auto", "on", "off"] = "off",
    **options: Any,
) -> Iterator[str]:
    """Serve any ASGI app on host:port (0: any free port) in a background thread; yields its origin URL.
    `options` go to uvicorn.Config as they are (the HTTP transport's limits and timeouts, say).

    The emulator runs in-process this way, and tests serve other apps (the HTTP transport) with it too."""
    sock = _listening_socket(host, port)
    # log_config=None: leave the process's logging alone (pytest captures uvicorn's records as they are).
    config = uvicorn.Config(
        app, lifespan=lifespan, log_config=None, access_log=False, timeout_graceful_shutdown=1, **options
    )
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


def serve_forever(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve an emulator in the foreground until interrupted; all logging goes to stderr."""
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    # stdout may be someone's protocol stream; uvicorn's access log defaults to it.
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    uvicorn.run(Emulator(config).app, host=host, port=port, lifespan="off", log_config=log_config)
