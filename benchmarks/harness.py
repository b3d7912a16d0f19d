"""What the benchmarks share: the key their emulators accept, and the server under test in memory or as the
console script's environment.

Imported by the scripts beside it (run as `.venv/bin/python benchmarks/bench_….py`, which puts this folder
on the import path). Not a benchmark itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client

from moondream_emulator import Emulator, running_emulator
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server

KEY = "bench-key"


def settings(endpoint: str, workdir: Path, **overrides: Any) -> Settings:
    """The server's settings for a benchmark: KEY at `endpoint`, reading `workdir`, its data inside it."""
    return Settings(api_key=KEY, endpoint=endpoint, allowed_dirs=[workdir], data_dir=workdir / "data", **overrides)


@asynccontextmanager
async def serving(emulator: Emulator, workdir: Path, **overrides: Any) -> AsyncIterator[Client]:
    """A client of the server in memory, its API `emulator` running while the block lasts."""
    with running_emulator(emulator) as running:
        async with Client(build_server(settings(running.url, workdir, **overrides))) as client:
            yield client


def console_env(workdir: Path, endpoint: str | None = None) -> dict[str, str]:
    """The environment for `python -m moondream_mcp`: none of the caller's MOONDREAM settings; reading `workdir`,
    its data inside it; KEY at `endpoint` when one is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOONDREAM")}
    env.update(MOONDREAM_MCP_ALLOWED_DIRS=str(workdir), MOONDREAM_MCP_DATA_DIR=str(workdir / "data"))
    if endpoint is not None:
        env.update(MOONDREAM_API_KEY=KEY, MOONDREAM_ENDPOINT=endpoint)
    return env
