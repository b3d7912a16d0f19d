"""Shared fixtures: the emulator on 127.0.0.1, settings pointing at it, an MCP client over the real protocol."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import stamina
from mcp import Client

from moondream_emulator import Emulator, EmulatorConfig, RunningEmulator, running_emulator
from moondream_mcp.config import Settings
from moondream_mcp.images import ImageLoader
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _retries_without_waiting(request: pytest.FixtureRequest) -> Iterator[None]:
    """Retries still happen, as many as the client allows, but without real backoff: the suite stays fast.
    A test marked `real_backoff` (one that measures the waits themselves) keeps them."""
    if request.node.get_closest_marker("real_backoff"):
        yield
        return
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: a developer's own MOONDREAM_* variables must not reach the tests."""
    for name in list(os.environ):
        if name.startswith("MOONDREAM"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def _shared_emulator() -> Iterator[RunningEmulator]:
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({API_KEY})))) as running:
        yield running


@pytest.fixture
def emulator(_shared_emulator: RunningEmulator) -> Iterator[RunningEmulator]:
    """The emulator, with no faults pending and an empty request log."""
    _shared_emulator.emulator.clear()
    yield _shared_emulator
    _shared_emulator.emulator.clear()


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    """The one directory a guard or loader under test may read."""
    path = tmp_path / "allowed"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling of the allowed directory, holding what must never be read or written."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
async def loader(allowed: Path) -> AsyncIterator[ImageLoader]:
    async with ImageLoader(allowed_dirs=[allowed]) as images:
        yield images


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The one directory the server under test may read."""
    path = tmp_path / "photos"
    path.mkdir()
    return path


@pytest.fixture
def settings(emulator: RunningEmulator, workdir: Path, tmp_path: Path) -> Settings:
    return Settings(
        api_key=API_KEY,
        endpoint=emulator.url,
        allowed_dirs=[workdir],
        data_dir=tmp_path / "data",
        timeout=10,
        retry_after_cap=2,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as connected:
        yield connected
