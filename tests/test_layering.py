"""The package's imports point one way: config -> files/images -> client -> domain -> state -> tools -> server,
with the emulator apart. Read from the source, so a new import that breaks the direction fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import moondream_mcp

PACKAGE = Path(moondream_mcp.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that `path` imports at load time (TYPE_CHECKING blocks and function bodies aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:  # module level only: imports inside functions are deliberate and lazy
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, ast.Try) else [node]:
            if isinstance(sub, ast.Import):
                found |= {alias.name for alias in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (sub.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in sub.names}
    return {m for m in found if m.split(".")[0] in ("moondream_mcp", "moondream_emulator")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_only_the_server_imports_the_tools() -> None:
    importers = {name for name, deps in _graph().items() if any(d.startswith("moondream_mcp.tools") for d in deps)}
    assert {n for n in importers if not n.startswith("moondream_mcp.tools")} == {"moondream_mcp.server"}


def test_no_module_below_the_tools_knows_mcp() -> None:
    # Domain, client, images and files know nothing of MCP; state.py (the tools' shared state) is the edge.
    above = (
        "moondream_mcp.tools",
        "moondream_mcp.server",
        "moondream_mcp.state",
        "moondream_mcp.http_transport",
        "moondream_mcp.stdio_transport",
        "moondream_mcp.manifest",
        "moondream_mcp.doctor",
        "moondream_mcp.emulated",
        "moondream_mcp.demo",
        "moondream_mcp.cli",
        "moondream_mcp.__main__",
    )
    knowing = sorted(
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if not _module_name(path).startswith(above)
        and any(line.lstrip().startswith(("import mcp", "from mcp")) for line in path.read_text().splitlines())
    )
    assert knowing == []


def test_nothing_imports_server_but_the_entry_points() -> None:
    importers = {name for name, deps in _graph().items() if "moondream_mcp.server" in deps}
    assert importers <= {
        "moondream_mcp.cli",
        "moondream_mcp.doctor",
        "moondream_mcp.http_transport",
        "moondream_mcp.demo",
    }


def test_the_product_never_imports_the_emulator_at_load_time() -> None:
    importers = {name for name, deps in _graph().items() if any(d.startswith("moondream_emulator") for d in deps)}
    assert importers == set()
