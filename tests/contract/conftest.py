"""The official clients, installed for these tests alone: the moondream Python SDK with pip (without its
local-inference dependencies), the Node client with npm. Without a registry to install from, the tests that
need one are skipped and say why."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

PYTHON_SDK = "moondream==2.6.1"
INSTALL_TIMEOUT = 180


@pytest.fixture(scope="session")
def moondream_sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The official `moondream` package, imported from a directory of its own.

    Installed with --no-deps: its wheel requires kestrel (and so torch) for Photon, local GPU inference;
    the cloud and finetuning clients (cloud_vl.py, finetune.py) need only Pillow, which is here.
    """
    target = tmp_path_factory.mktemp("moondream-sdk")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), PYTHON_SDK]
    try:
        installed = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install {PYTHON_SDK} took over {INSTALL_TIMEOUT} s (no registry reachable?)")
    if installed.returncode != 0:
        pytest.skip(f"pip install {PYTHON_SDK} failed (offline?): {installed.stderr.strip()[-300:]}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("moondream")
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m == "moondream" or m.startswith("moondream.")]:
            del sys.modules[name]
