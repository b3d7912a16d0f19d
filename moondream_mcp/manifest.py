"""tools.json: the server's own tool list, as clients see it."""

from __future__ import annotations

import json
from typing import Any

from mcp.server import MCPServer

FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


async def tool_manifest(server: MCPServer[Any]) -> str:
    """The tool list as stable, pretty JSON (sorted by name) ending in a newline."""
    tools = []
    for tool in sorted(await server.list_tools(), key=lambda t: t.name):
        wire = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
        tools.append({key: wire[key] for key in FIELDS if key in wire})
    return json.dumps({"tools": tools}, indent=2, ensure_ascii=False) + "\n"
