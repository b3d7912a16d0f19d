"""Build the MCP Bundle that Claude Desktop installs with one click.

    python scripts/build_bundle.py [--output DIR]    ->    DIR/mcp-server-moondream-<version>.mcpb

The bundle is a zip of manifest.json, pyproject.toml and the package sources, plus a small entry point:
a `uv` bundle, whose host makes the environment from pyproject.toml with uv, so no dependency (and no
compiled wheel for the wrong platform) is packed in it.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("moondream_mcp", "moondream_emulator")
# pyproject.toml names README.md and LICENSE: building the project needs them.
FILES = ("manifest.json", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md")
ENTRY_POINT = '''\
"""The bundle's entry point: the moondream-mcp console script, in the environment uv made for it."""

from moondream_mcp.cli import main

main()
'''


def version() -> str:
    """The package's version, read as setuptools reads it: the one assignment in moondream_mcp/__init__.py."""
    module = ast.parse((ROOT / "moondream_mcp" / "__init__.py").read_text(encoding="utf-8"))
    for node in module.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise SystemExit("moondream_mcp/__init__.py has no __version__")


def stage(target: Path) -> Path:
    """Lay out the bundle's files in `target` (what the zip will hold), after checking the manifest."""
    manifest = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))
    if manifest["version"] != version():
        raise SystemExit(f"manifest.json says version {manifest['version']}, the package {version()}: make them agree")
    for name in FILES:
        shutil.copy2(ROOT / name, target / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    entry = target / manifest["server"]["entry_point"]
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(ENTRY_POINT, encoding="utf-8")
    return target


def build(output: Path) -> Path:
    """Write the .mcpb into `output`; returns its path."""
    output.mkdir(parents=True, exist_ok=True)
    bundle = output / f"mcp-server-moondream-{version()}.mcpb"
    with tempfile.TemporaryDirectory() as scratch:
        staged = stage(Path(scratch))
        with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(staged.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(staged).as_posix())
    return bundle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the MCP Bundle (.mcpb) for Claude Desktop.")
    parser.add_argument("--output", "-o", type=Path, default=ROOT / "dist", help="directory to write to (dist/)")
    bundle = build(parser.parse_args(argv).output)
    sys.stdout.write(f"{bundle}\n")


if __name__ == "__main__":
    main()
