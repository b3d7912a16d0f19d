"""Fixtures for the image tests: an asyncio backend and a loader confined to one temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moondream_mcp.images import ImageLoader


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    """The one directory the loader under test may read."""
    path = tmp_path / "allowed"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling of the allowed directory, holding things the loader must never read."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
async def loader(allowed: Path) -> AsyncIterator[ImageLoader]:
    async with ImageLoader(allowed_dirs=[allowed]) as images:
        yield images
