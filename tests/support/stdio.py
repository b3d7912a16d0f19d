"""Talking to the console script over real stdio: its environment, and JSON-RPC lines written by hand."""

from __future__ import annotations

import json
import os
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
