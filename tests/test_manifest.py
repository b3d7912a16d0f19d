"""tools.json at the top of the repository is what the server lists today."""

from __future__ import annotations

from pathlib import Path

import pytest

from moondream_mcp.config import Settings
from moondream_mcp.manifest import tool_manifest
from moondream_mcp.server import build_server

pytestmark = pytest.mark.anyio

COMMITTED = Path(__file__).resolve().parent.parent / "tools.json"


async def test_tools_json_is_up_to_date(tmp_path: Path) -> None:
    current = await tool_manifest(build_server(Settings(allowed_dirs=[tmp_path])))
    assert COMMITTED.read_text(encoding="utf-8") == current, (
        "tools.json is stale: regenerate it with `moondream-mcp tools -o tools.json`"
    )
