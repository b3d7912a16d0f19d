"""The package as a user gets it: the sdist and the wheel built from it, checked by twine, the wheel
installed into a fresh virtualenv (dependencies from the package index), and its console scripts run
from there — so a missing package file or an undeclared dependency fails here, not on a user's machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest

import moondream_mcp
from moondream_mcp.config import Settings
from moondream_mcp.manifest import tool_manifest
from moondream_mcp.server import build_server

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
NAME = "mcp-server-moondream"
VERSION = moondream_mcp.__version__
INSTALL_TIMEOUT = 900  # seconds: pip may download every dependency on a cold cache


def _run(*command: str | Path, timeout: float = 120, **options: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **options)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MOONDREAM", "PYTHON", "VIRTUAL_ENV"))}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from that sdist (what `python -m build` does by default)."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT, timeout=INSTALL_TIMEOUT)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    return dist / f"mcp_server_moondream-{VERSION}-py3-none-any.whl"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh virtualenv holding the wheel and nothing else of this checkout."""
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, timeout=INSTALL_TIMEOUT, env=_clean_env())
    return venv / "bin"


def test_the_sdist_and_the_wheel_pass_twine_check(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert [f.name for f in files] == [
        f"mcp_server_moondream-{VERSION}-py3-none-any.whl",
        f"mcp_server_moondream-{VERSION}.tar.gz",
    ]
    _run(sys.executable, "-m", "twine", "check", "--strict", *files)


def test_the_wheel_holds_both_packages_the_license_the_type_marker_and_both_console_scripts(wheel: Path) -> None:
    info = f"mcp_server_moondream-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        scripts = archive.read(f"{info}/entry_points.txt").decode()
    sources = {
        p.relative_to(ROOT).as_posix()
        for pkg in ("moondream_mcp", "moondream_emulator")
        for p in (ROOT / pkg).rglob("*.py")
    }
    assert sources <= names
    assert {"moondream_mcp/py.typed", f"{info}/licenses/LICENSE"} <= names
    assert (metadata["Name"], metadata["Version"], metadata["License-Expression"]) == (NAME, VERSION, "Apache-2.0")
    assert any(url.startswith("Repository, https://") for url in metadata.get_all("Project-URL"))
    assert "moondream-mcp = moondream_mcp.cli:main" in scripts and f"{NAME} = moondream_mcp.cli:main" in scripts


def test_the_sdist_holds_what_a_rebuild_and_a_reader_need(dist: Path) -> None:
    with tarfile.open(dist / f"mcp_server_moondream-{VERSION}.tar.gz") as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "moondream_mcp/py.typed"} <= names


def test_the_installed_wheel_reports_its_version_from_both_console_scripts(installed: Path, tmp_path: Path) -> None:
    for script in ("moondream-mcp", NAME):
        done = _run(installed / script, "--version", cwd=tmp_path, env=_clean_env())
        assert done.stdout.strip() == f"moondream-mcp {VERSION}"


async def test_the_installed_wheel_lists_the_same_tools_as_this_checkout(installed: Path, tmp_path: Path) -> None:
    done = _run(installed / "moondream-mcp", "tools", cwd=tmp_path, env=_clean_env())
    here = await tool_manifest(build_server(Settings(allowed_dirs=[tmp_path], data_dir=tmp_path)))
    assert json.loads(done.stdout) == json.loads(here)


def test_uvx_runs_the_wheel_in_one_line(wheel: Path, tmp_path: Path) -> None:
    # The README's one-line way to run it, given the wheel instead of the repository's URL.
    uvx = shutil.which("uvx", path=str(Path(sys.executable).parent)) or shutil.which("uvx")
    assert uvx is not None, "uv comes with the test extra"
    env = {**_clean_env(), "UV_PYTHON": sys.executable}  # nothing may be downloaded but packages
    done = _run(uvx, "--from", wheel, NAME, "--version", cwd=tmp_path, env=env, timeout=INSTALL_TIMEOUT)
    assert done.stdout.strip() == f"moondream-mcp {VERSION}"


def test_the_installed_wheel_runs_the_demo_with_its_own_emulator(installed: Path, tmp_path: Path) -> None:
    done = _run(installed / "moondream-mcp", "demo", "--output", tmp_path / "demo", cwd=tmp_path, env=_clean_env())
    assert "EMULATOR" in done.stdout and "checkpoint: moondream3-preview/" in done.stdout
