"""The tool list, built once and kept.

Building a tool (its argument model, its input and output schemas) is pydantic work of about 5 ms, which for 35
tools was most of the time from start to tools listed. So a tool is offered to the server unbuilt, and built when
it is first called; the list a client reads comes from a copy kept in the data directory, made the first time the
tools are built. The copy is keyed by a hash of this package's source, the Python version and the packages
installed beside the SDK and pydantic (their names and versions): any change makes it stale, and a stale,
unreadable or missing copy is never served, only rebuilt; so is an entry the SDK cannot send. Every input schema
is listed as tools/schemas.py writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp
import mcp_types
import pydantic
import pydantic_core
from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool as BuiltTool
from mcp.server.mcpserver.tools import ToolManager
from mcp.types import Icon, Tool, ToolAnnotations

from ..files import FileError, FileGuard
from ..outputs import save_own
from ..state import AppState
from .schemas import lean_schema

# A copy larger than this is not ours to read (the 35 tools' list is about 100 kB).
_MAX_COPY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Declared:
    """What a tool is listed with besides its schemas, known without building it."""

    title: str | None
    description: str
    annotations: ToolAnnotations | None
    icons: list[Icon] | None = None
    meta: dict[str, Any] | None = None


class LazyTools(ToolManager):
    """The SDK's tool manager, holding offered tools unbuilt until one is asked for by name; otherwise as the SDK's."""

    def __init__(self, warn_on_duplicate_tools: bool = True, *, tools: list[BuiltTool] | None = None) -> None:
        super().__init__(warn_on_duplicate_tools, tools=tools)
        self._unbuilt: dict[str, tuple[Callable[..., Any], Declared]] = {}
        self.names: list[str] = list(self._tools)  # every tool, in the order offered or added

    def offer(self, fn: Callable[..., Any], declared: Declared) -> None:
        if fn.__name__ in self.names:
            raise ValueError(f"tool {fn.__name__} is offered twice")
        self._unbuilt[fn.__name__] = (fn, declared)
        self.names.append(fn.__name__)

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> BuiltTool:
        """A tool built at once, as the SDK builds it. One offered under the same name comes first, and stays."""
        self.get_tool(name or fn.__name__)
        tool = super().add_tool(
            fn,
            name=name,
            title=title,
            description=description,
            annotations=annotations,
            icons=icons,
            meta=meta,
            structured_output=structured_output,
        )
        if tool.name not in self.names:
            self.names.append(tool.name)
        return tool

    def get_tool(self, name: str) -> BuiltTool | None:
        waiting = self._unbuilt.pop(name, None)
        if waiting is not None:
            fn, declared = waiting
            super().add_tool(
                fn,
                title=declared.title,
                description=declared.description,
                annotations=declared.annotations,
                icons=declared.icons,
                meta=declared.meta,
            )
        return super().get_tool(name)

    def list_tools(self) -> list[BuiltTool]:
        """Every tool, built (the SDK's meaning)."""
        built = [self.get_tool(name) for name in self.names]
        return [tool for tool in built if tool is not None]

    def remove_tool(self, name: str) -> None:
        if self._unbuilt.pop(name, None) is None:
            super().remove_tool(name)
        self.names.remove(name)

    def declared(self, name: str) -> Declared:
        waiting = self._unbuilt.get(name)
        if waiting is not None:
            return waiting[1]
        tool = super().get_tool(name)
        assert tool is not None, name
        return Declared(tool.title, tool.description, tool.annotations, tool.icons, tool.meta)


class KeptListing:
    """Each tool's listed schemas, as last built by this very code; read from and written to one file."""

    def __init__(self, path: Path | None) -> None:
        # The server's own file in its data directory, read and written through the file guard as the others are:
        # no link followed, no pipe waited on, nothing past the size limit read, written whole or not at all.
        self._files = FileGuard([], _MAX_COPY_BYTES, path.parent) if path else None
        self._name = path.name if path else ""
        self.key = _code_key() if self._files else ""
        # tool name -> description -> its schemas
        self._tools: dict[str, dict[str, dict[str, Any]]] = {}
        if self._files is not None:
            self._tools = _read(self._files, self._name, self.key)
        self.changed = False

    def get(self, name: str, description: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        # By description too: enable_toolset's is made at start, from the toolsets left to enable.
        kept = self._tools.get(name, {}).get(description)
        return None if kept is None else (kept["input"], kept["output"])

    def put(self, name: str, description: str, schemas: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
        self._tools.setdefault(name, {})[description] = {"input": schemas[0], "output": schemas[1]}
        self.changed = self._files is not None

    def drop(self, name: str, description: str) -> None:
        self._tools.get(name, {}).pop(description, None)

    def text(self) -> str:
        """The copy as written; taken where the entries change, so that writing it elsewhere is safe."""
        return json.dumps({"key": self.key, "tools": self._tools}, separators=(",", ":"))

    def write(self, text: str) -> None:
        """Write the copy; a data directory that cannot take it only costs time. Blocking."""
        # The data directory is made by the store as the server starts; a server without one keeps nothing.
        if self._files is None or self._files.own_dir is None or not self._files.own_dir.is_dir():
            return
        with contextlib.suppress(FileError):
            save_own(self._files, "", self._name, text.encode())


class ListedServer(MCPServer[AppState]):
    """The SDK's server with tools offered unbuilt (`offer_tool`) and listed from a kept copy (`listing`)."""

    def __init__(self, *args: Any, listing: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sdk = self._tool_manager
        self._tool_manager: LazyTools = LazyTools(sdk.warn_on_duplicate_tools, tools=sdk.list_tools())
        self._kept = KeptListing(listing)
        self._listed: dict[str, Tool] = {}

    def offer_tool(self, fn: Callable[..., Any], *, title: str, description: str, annotations: ToolAnnotations) -> None:
        self._tool_manager.offer(fn, Declared(title, description, annotations))

    def remove_tool(self, name: str) -> None:
        super().remove_tool(name)
        self._listed.pop(name, None)

    async def list_tools(self) -> list[Tool]:
        for name in self._tool_manager.names:
            if name not in self._listed:
                self._listed[name] = self._listing(name)
        if self._kept.changed:
            self._kept.changed = False
            await anyio.to_thread.run_sync(self._kept.write, self._kept.text())
        return [self._listed[name] for name in self._tool_manager.names]

    def _listing(self, name: str) -> Tool:
        declared = self._tool_manager.declared(name)
        kept = self._kept.get(name, declared.description)
        if kept is not None:
            tool = _tool(name, declared, kept)
            try:
                tool.model_dump(mode="json", by_alias=True)  # as the SDK will send it
                return tool
            except Exception:  # a copy the SDK cannot send (too deep, not JSON): built again
                self._kept.drop(name, declared.description)
        built = self._tool_manager.get_tool(name)
        assert built is not None, name
        schemas = (lean_schema(built.parameters), built.output_schema)
        self._kept.put(name, declared.description, schemas)
        return _tool(name, declared, schemas)


def _tool(name: str, declared: Declared, schemas: tuple[dict[str, Any], dict[str, Any] | None]) -> Tool:
    return Tool(
        name=name,
        title=declared.title,
        description=declared.description,
        input_schema=schemas[0],
        output_schema=schemas[1],
        annotations=declared.annotations,
        icons=declared.icons,
        _meta=declared.meta,
    )


def _code_key() -> str:
    """A hash of everything a tool's schemas are made from."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(sys.version_info[:3]).encode())
    # The installed distributions beside the SDK and pydantic, by name and version: an upgrade of either, or of
    # anything they build schemas with, changes a name here.
    places = {Path(module.__file__ or "").parent.parent for module in (mcp, mcp_types, pydantic, pydantic_core)}
    for place in sorted(places):
        with contextlib.suppress(OSError):
            digest.update(" ".join(sorted(n for n in os.listdir(place) if n.endswith(".dist-info"))).encode())
    ours = Path(__file__).parent.parent
    for source in sorted(ours.rglob("*.py")):
        digest.update(str(source.relative_to(ours)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _read(files: FileGuard, name: str, key: str) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        with files.open_own_read(name) as opened:
            data = json.loads(opened.read())
    except (FileError, ValueError, RecursionError):
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
