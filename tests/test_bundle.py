"""The MCP Bundle for Claude Desktop: manifest.json passes the official `@anthropic-ai/mcpb` validator, the
bundle scripts/build_bundle.py writes unpacks with that tool, and it serves the tools when started the
way its manifest tells the host to (uv, the user's settings substituted in)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

import moondream_mcp
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY
from tests.support.pictures import assert_box, canvas, save

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))
# Pinned, like the linters: a new release may judge differently, and every run must judge alike.
MCPB = "@anthropic-ai/mcpb@2.1.2"
NPM_TIMEOUT = 600


def _run(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def mcpb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official mcpb command line, installed into a temporary directory."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the official @anthropic-ai/mcpb validator cannot run")
    prefix = tmp_path_factory.mktemp("mcpb")
    _run(npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel=error", MCPB, timeout=NPM_TIMEOUT)
    return prefix / "node_modules" / ".bin" / "mcpb"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    built = _run(sys.executable, ROOT / "scripts" / "build_bundle.py", "--output", out)
    return Path(built.stdout.strip())


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle as the host extracts it (a zip), for the tests that need no Node."""
    target = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(target)
    return target


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_manifest_passes_the_official_validator(mcpb: Path) -> None:
    done = _run(mcpb, "validate", ROOT / "manifest.json")
    assert "passes" in done.stdout


def test_the_manifest_asks_for_the_key_the_folders_the_endpoint_and_the_toolsets() -> None:
    config = MANIFEST["user_config"]
    assert config["api_key"]["sensitive"] is True
    assert (config["allowed_directories"]["type"], config["allowed_directories"]["multiple"]) == ("directory", True)
    mcp_config = MANIFEST["server"]["mcp_config"]
    assert mcp_config["env"] == {
        "MOONDREAM_API_KEY": "${user_config.api_key}",
        "MOONDREAM_ENDPOINT": "${user_config.endpoint}",
        "MOONDREAM_MCP_TOOLSETS": "${user_config.toolsets}",
    }
    # The folders go as separate arguments after `serve`: that is how a multiple choice expands.
    assert mcp_config["args"][-2:] == ["serve", "${user_config.allowed_directories}"]
    assert MANIFEST["version"] == moondream_mcp.__version__


def test_the_toolsets_setting_names_every_toolset_the_server_has() -> None:
    offered = build_server(Settings()).toolsets
    named = re.findall(r"[a-z]+", MANIFEST["user_config"]["toolsets"]["description"].split(":", 1)[1])
    assert [n for n in named if n not in ("or", "all")] == offered


def test_the_official_tool_unpacks_the_built_bundle_which_holds_what_uv_needs(
    mcpb: Path, bundle: Path, tmp_path: Path
) -> None:
    _run(mcpb, "unpack", bundle, tmp_path)
    _run(mcpb, "validate", tmp_path / "manifest.json")
    expected = {
        "manifest.json",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        MANIFEST["server"]["entry_point"],
        "moondream_mcp/server.py",
        "moondream_mcp/py.typed",
        "moondream_emulator/__init__.py",
    }
    files = _files(tmp_path)
    assert expected <= files
    assert not [f for f in files if "__pycache__" in f or f.startswith(("server/lib", "server/venv"))]


def _substituted(mcp_config: dict[str, Any], values: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """What the host runs: `${...}` replaced; a list value given alone as an argument expands into several."""

    def one(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(values[m.group(1)]), text)

    args: list[str] = []
    for arg in mcp_config["args"]:
        whole = re.fullmatch(r"\$\{([^}]+)\}", arg)
        if whole and isinstance(values[whole.group(1)], list):
            args.extend(values[whole.group(1)])
        else:
            args.append(one(arg))
    return args, {name: one(value) for name, value in mcp_config["env"].items()}


async def test_the_bundle_serves_the_tools_when_started_as_its_manifest_says(
    unpacked: Path, emulator, workdir: Path, tmp_path: Path
) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv is not None, "uv comes with the test extra"
    elsewhere = tmp_path / "scans"
    elsewhere.mkdir()
    image = save(canvas(), elsewhere / "square.png")
    args, env = _substituted(
        MANIFEST["server"]["mcp_config"],
        {
            "__dirname": unpacked,
            "user_config.allowed_directories": [str(workdir), str(elsewhere)],
            "user_config.api_key": API_KEY,
            "user_config.endpoint": emulator.url,
            "user_config.toolsets": MANIFEST["user_config"]["toolsets"]["default"],
        },
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MOONDREAM", "VIRTUAL_ENV", "PYTHON"))}
    # The host picks the Python; here, the one running the tests (nothing may be downloaded).
    base.update(UV_PYTHON=sys.executable, MOONDREAM_MCP_DATA_DIR=str(tmp_path / "data"))
    params = StdioServerParameters(command=uv, args=args, env={**base, **env})
    with anyio.fail_after(600):  # the first start makes the environment from pyproject.toml
        async with Client(params) as client:
            result = await client.call_tool("detect", {"image": image, "object": "red"})
    assert not result.is_error, result.content
    assert_box(result.structured_content["objects"][0], (0.25, 0.2, 0.5, 0.6))
