"""Talking to the console script over real stdio: its environment, and JSON-RPC lines written by hand."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from tests.support.keys import API_KEY


def server_env(emulator, workdir: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOONDREAM")}
    env.update(
        MOONDREAM_API_KEY=API_KEY,
        MOONDREAM_ENDPOINT=emulator.url,
        MOONDREAM_MCP_ALLOWED_DIRS=str(workdir),
        MOONDREAM_MCP_DATA_DIR=str(tmp_path / "data"),
    )
    return env


def rpc(id_: int | None, method: str, params: dict | None = None) -> bytes:
    message: dict = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        message["id"] = id_
    if params is not None:
        message["params"] = params
    return (json.dumps(message) + "\n").encode()


class StdioPeer:
    """The console script on real stdio, spoken to in raw lines, as a client that misbehaves would.

    `answer(line)` sends the line, then a ping, and returns what came back for the line; silence fails
    once the ping is answered and nothing else comes within a bound.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moondream_mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._pings = 1_000_000
        hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
        self._send(rpc(0, "initialize", hello))
        assert self._next()["id"] == 0
        self._send(rpc(None, "notifications/initialized"))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def _send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data if data.endswith(b"\n") else data + b"\n")
        self.process.stdin.flush()

    def _next(self, timeout: float = 60) -> dict:
        return json.loads(self._lines.get(timeout=timeout))  # anything but JSON on stdout fails here

    def answer(self, line: bytes, bound: float = 20) -> dict:
        self._pings += 1
        self._send(line)
        self._send(rpc(self._pings, "ping"))
        answers = [self._next(), self._next(bound)]  # queue.Empty here: the line was met with silence
        rest = [a for a in answers if a.get("id") != self._pings]
        assert len(rest) == 1, answers
        return rest[0]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(15)
