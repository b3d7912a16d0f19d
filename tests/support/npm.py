"""A throwaway npm project for tests that drive a JavaScript client: skipped, saying why, where it cannot be had."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NPM_TIMEOUT = 180


def npm_project(project: Path, manifest: dict, package: str, scripts: dict[str, str], purpose: str) -> Path:
    """`project` with `manifest` as its package.json, `package` installed by npm and each script written;
    the test is skipped without node and npm (needed `purpose`) or a registry to install from."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"node and npm are needed {purpose}; they are not installed")
    (project / "package.json").write_text(json.dumps(manifest))
    try:
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", package],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {package} took over {NPM_TIMEOUT} s (no registry reachable?)")
    if installed.returncode != 0:
        pytest.skip(f"npm install {package} failed (offline?): {installed.stderr.strip()[-300:]}")
    for name, text in scripts.items():
        (project / name).write_text(text)
    return project
