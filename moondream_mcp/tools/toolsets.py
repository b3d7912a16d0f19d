"""Toolsets: each tool declared with its toolset and whether read-only mode keeps it. The server builds and lists
only the chosen toolsets; enable_toolset turns on another one later."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ..state import Ctx
from .listing import ListedServer
from .results import compact

ALL = "all"
# What enable_toolset says of each toolset; a toolset not named here is described by its tools' names.
SUMMARIES = {
    "vision": "caption, query, detect, point, segment, ask, zoom",
    "tuning": "finetunes, train steps",
    "batch": "many images",
    "training": "datasets, labels, runs",
    "video": "detect, redact",
}
F = TypeVar("F", bound=Callable[..., Any])


class ToolsetError(ValueError):
    """Toolsets asked for that no tool belongs to: the server refuses to start, saying which exist."""


@dataclass(frozen=True)
class Declared:
    """A tool as declared, not yet built: building one (its argument model and schemas) is left until it is offered."""

    fn: Callable[..., Any]
    toolset: str
    title: str
    annotations: ToolAnnotations
    read_only: bool

    @property
    def name(self) -> str:
        return self.fn.__name__


class Toolbox:
    """Every tool the server can offer, by toolset."""

    def __init__(self) -> None:
        self._declared: dict[str, Declared] = {}

    def tool(self, toolset: str, *, title: str, annotations: ToolAnnotations, read_only: bool) -> Callable[[F], F]:
        """Declare the decorated function a tool of `toolset` (any name: a new one is a new toolset).

        read_only: the tool changes nothing remote, spends no more than single inference calls and writes files
        only in the data directory. Read-only mode offers exactly these tools.
        """
        if read_only and (annotations.read_only_hint is not True or annotations.destructive_hint):
            raise ValueError(f"a tool of toolset {toolset} is declared read_only but its annotations say it modifies")

        def declare(fn: F) -> F:
            if fn.__name__ in self._declared:
                raise ValueError(f"tool {fn.__name__} is declared twice")
            self._declared[fn.__name__] = Declared(fn, toolset, title, annotations, read_only)
            return fn

        return declare

    @property
    def toolsets(self) -> dict[str, list[str]]:
        """Each toolset's tools by name, in the order declared."""
        sets: dict[str, list[str]] = {}
        for declared in self._declared.values():
            sets.setdefault(declared.toolset, []).append(declared.name)
        return sets

    def choose(self, names: Iterable[str]) -> list[str]:
        """The toolsets named (`all`: every one), or ToolsetError naming the unknown ones and the known ones."""
        known = list(self.toolsets)
        wanted = [n.strip().lower() for n in names if n.strip()] or [ALL]
        unknown = [n for n in wanted if n != ALL and n not in known]
        if unknown:
            raise ToolsetError(
                f"unknown toolset{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in MOONDREAM_MCP_TOOLSETS / "
                f"--toolsets; the toolsets are {', '.join(known)} (or {ALL})"
            )
        return known if ALL in wanted else [n for n in known if n in wanted]

    def offered(self, toolsets: Iterable[str], *, read_only: bool) -> list[Declared]:
        chosen = set(toolsets)
        return [d for d in self._declared.values() if d.toolset in chosen and (d.read_only or not read_only)]

    def serve(self, server: ListedServer, toolsets: Iterable[str], *, read_only: bool) -> list[str]:
        """Add the chosen toolsets' tools to `server` (and enable_toolset when others remain); their names."""
        chosen = self.choose(toolsets)
        added = _add(server, self.offered(chosen, read_only=read_only))
        later = [t for t in self.toolsets if t not in chosen and self.offered([t], read_only=read_only)]
        if later:
            self._offer_switch(server, later, read_only=read_only)
            added.append("enable_toolset")
        return added

    def _offer_switch(self, server: ListedServer, later: list[str], *, read_only: bool) -> None:
        enabled: set[str] = set()
        listing = "; ".join(
            f"{t} ({SUMMARIES.get(t) or ', '.join(d.name for d in self.offered([t], read_only=read_only))})"
            for t in later
        )

        async def enable_toolset(toolset: str, ctx: Ctx) -> Enabled:
            if toolset in enabled:
                return Enabled(toolset=toolset, tools=[], message=f"{toolset} is already on.")
            enabled.add(toolset)
            names = _add(server, self.offered([toolset], read_only=read_only))
            # Handshake-era clients hear it on the session; 2026 clients on their subscriptions/listen stream.
            await ctx.session.send_tool_list_changed()
            await ctx.notify_tools_changed()
            return Enabled(toolset=toolset, tools=names, message=f"{toolset} is on: {', '.join(names)}.")

        # The names are known only now: the parameter's type is set here rather than written in the signature.
        enable_toolset.__annotations__["toolset"] = Annotated[
            Literal.__getitem__(tuple(later)), Field(description="Toolset.")
        ]
        server.offer_tool(
            compact(enable_toolset),
            title="Turn on a toolset",
            description=f"Add tools: {listing}.",
            annotations=ToolAnnotations(
                read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
            ),
        )


class Enabled(BaseModel):
    toolset: str
    tools: list[str] = Field(description="The tools it added; now listed.")
    message: str


def _add(server: ListedServer, declared: list[Declared]) -> list[str]:
    for d in declared:
        # One line: a docstring's line breaks and indentation would cost the model's context too.
        description = " ".join((d.fn.__doc__ or "").split())
        server.offer_tool(d.fn, title=d.title, description=description, annotations=d.annotations)
    return [d.name for d in declared]
