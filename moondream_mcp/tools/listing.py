"""The tool list, built once and kept.

Building a tool (its argument model, its input and output schemas) is pydantic work of about 5 ms, which for 35
tools was most of the time from start to tools listed. So a tool is offered to the server unbuilt, and built when
it is first called; the list a client reads comes from a copy kept in the data directory, made the first time the
tools are built. The copy is keyed by a hash of this package's source and of what else shapes a schema (the
pydantic version, the SDK's schema code, the Python version): any change makes it stale, and a stale, unreadable
or missing copy is never served, only rebuilt. Every input schema is listed as tools/schemas.py writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pydantic
from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool as BuiltTool
from mcp.server.mcpserver.tools import ToolManager
from mcp.server.mcpserver.utilities import func_metadata
from mcp.types import Tool, ToolAnnotations

from ..state import AppState
from .schemas import lean_schema

# A copy larger than this is not ours to read (the 35 tools' list is about 100 kB).
_MAX_COPY_BYTES = 4 * 1024 * 1024


class LazyTools(ToolManager):
    """The SDK's tool manager, holding offered tools unbuilt until one is asked for by name."""

    def __init__(self) -> None:
        super().__init__()
        self._unbuilt: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
        self.names: list[str] = []  # every tool, in the order offered or added

    def offer(self, fn: Callable[..., Any], *, title: str, description: str, annotations: ToolAnnotations) -> None:
        if fn.__name__ in self.names:
            raise ValueError(f"tool {fn.__name__} is offered twice")
        self._unbuilt[fn.__name__] = (fn, {"title": title, "description": description, "annotations": annotations})
        self.names.append(fn.__name__)

    def add_tool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> BuiltTool:
        """A tool built at once, as the SDK builds it (what the server's `tool` decorator does)."""
        tool = super().add_tool(fn, *args, **kwargs)
        if tool.name not in self.names:
            self.names.append(tool.name)
        return tool

    def get_tool(self, name: str) -> BuiltTool | None:
        waiting = self._unbuilt.pop(name, None)
        if waiting is not None:
            fn, how = waiting
            super().add_tool(fn, **how)
        return super().get_tool(name)

    def declared(self, name: str) -> tuple[str | None, str, ToolAnnotations | None]:
        """Title, description and annotations, known without building the tool."""
        waiting = self._unbuilt.get(name)
        if waiting is not None:
            how = waiting[1]
            return how["title"], how["description"], how["annotations"]
        tool = super().get_tool(name)
        assert tool is not None, name
        return tool.title, tool.description, tool.annotations


class KeptListing:
    """Each tool's listed schemas, as last built by this very code; read from and written to one file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.key = _code_key() if path else ""
        # tool name -> description -> its schemas
        self._tools: dict[str, dict[str, dict[str, Any]]] = _read(path, self.key) if path else {}
        self.changed = False

    def get(self, name: str, description: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        # By description too: enable_toolset's is made at start, from the toolsets left to enable.
        kept = self._tools.get(name, {}).get(description)
        return None if kept is None else (kept["input"], kept["output"])

    def put(self, name: str, description: str, schemas: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
        self._tools.setdefault(name, {})[description] = {"input": schemas[0], "output": schemas[1]}
        self.changed = self.path is not None

    def save(self) -> None:
        """Write the copy if it changed, whole or not at all; a data directory that cannot take it only costs time."""
        if not self.changed or self.path is None:
            return
        self.changed = False
        text = json.dumps({"key": self.key, "tools": self._tools}, separators=(",", ":"))
        try:
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


class ListedServer(MCPServer[AppState]):
    """The SDK's server with tools offered unbuilt (`offer_tool`) and listed from a kept copy (`listing`)."""

    def __init__(self, *args: Any, listing: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tool_manager: LazyTools = LazyTools()
        self._kept = KeptListing(listing)
        self._listed: dict[str, Tool] = {}

    def offer_tool(self, fn: Callable[..., Any], *, title: str, description: str, annotations: ToolAnnotations) -> None:
        self._tool_manager.offer(fn, title=title, description=description, annotations=annotations)

    async def list_tools(self) -> list[Tool]:
        tools = self._tool_manager
        for name in tools.names:
            if name in self._listed:
                continue
            title, description, annotations = tools.declared(name)
            schemas = self._kept.get(name, description)
            if schemas is None:
                built = tools.get_tool(name)
                assert built is not None, name
                schemas = (lean_schema(built.parameters), built.output_schema)
                self._kept.put(name, description, schemas)
            self._listed[name] = Tool(
                name=name,
                title=title,
                description=description,
                input_schema=schemas[0],
                output_schema=schemas[1],
                annotations=annotations,
            )
        if self._kept.changed:
            await anyio.to_thread.run_sync(self._kept.save)
        return [self._listed[name] for name in tools.names]


def _code_key() -> str:
    """A hash of everything a tool's schemas are made from."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{sys.version_info[:3]} pydantic {pydantic.VERSION}".encode())
    sdk = Path(func_metadata.__file__).parent.parent  # mcp/server/mcpserver
    ours = Path(__file__).parent.parent
    sources = [sdk / "utilities" / "func_metadata.py", sdk / "tools" / "base.py", *sorted(ours.rglob("*.py"))]
    for source in sources:
        digest.update(str(source.relative_to(source.parents[1])).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _read(path: Path, key: str) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_COPY_BYTES + 1)
        data = json.loads(raw) if len(raw) <= _MAX_COPY_BYTES else None
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("tools"), dict):
        return {}
    return {
        name: {description: kept for description, kept in versions.items() if _well_formed(kept)}
        for name, versions in data["tools"].items()
        if isinstance(versions, dict)
    }


def _well_formed(kept: Any) -> bool:
    if not isinstance(kept, dict):
        return False
    return isinstance(kept.get("input"), dict) and isinstance(kept.get("output"), dict | None)
