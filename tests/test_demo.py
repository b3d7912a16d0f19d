"""`moondream-mcp demo`: a fresh process with no key runs every vision tool and a training run, and says
that the answers are emulated."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mcp.types import Tool, ToolAnnotations
from PIL import Image

from moondream_mcp.config import Settings
from moondream_mcp.demo import arguments, vision_tools
from moondream_mcp.server import build_server

pytestmark = pytest.mark.anyio

SKILLS = ("caption", "query", "detect", "point", "segment")


def _without_moondream_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MOONDREAM")}


def test_the_demo_runs_every_vision_tool_and_a_training_run_from_a_fresh_process_without_a_key(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "moondream_mcp", "demo", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_without_moondream_env(),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "EMULATOR" in lines[0] and "not from a model" in lines[0]

    ran = {line.split()[0] for line in lines if line.startswith("  ") and line.split()}
    assert set(SKILLS) <= ran
    assert not [line for line in lines if "refused" in line or "skipped" in line]
    assert any(re.search(r"query .* -> \"2\"$", line) for line in lines)  # two blue squares in the scene
    assert any(re.search(r"detect .* -> 2 box", line) for line in lines)

    pictures = [Path(line.split("picture: ")[1]) for line in lines if "picture: " in line]
    # zoom crops each of the scene's two blue squares it finds
    assert {p.stem for p in pictures} == {"detect", "point", "segment", "zoom-1", "zoom-2"}
    for picture in pictures:
        assert picture.parent == out.resolve()
        with Image.open(picture) as opened:
            assert opened.format == "JPEG"

    steps = [line for line in lines if re.search(r"step \d: mean reward \d\.\d\d$", line)]
    assert len(steps) == 2
    assert any(re.search(r"checkpoint: moondream3-preview/\w+@2$", line) for line in lines)


async def test_the_demo_finds_the_vision_tools_the_server_has_and_leaves_the_others(tmp_path: Path) -> None:
    tools = await build_server(Settings(allowed_dirs=[tmp_path], data_dir=tmp_path)).list_tools()
    chosen = [t.name for t in vision_tools(tools)]
    assert chosen[: len(SKILLS)] == list(SKILLS)
    # generate_rollouts takes an image too, but changes remote state: not something to show off.
    assert "generate_rollouts" not in chosen and "batch" not in chosen


def test_a_vision_tool_needing_a_parameter_the_demo_does_not_know_is_skipped_with_the_reason(tmp_path: Path) -> None:
    looking = ToolAnnotations(read_only_hint=True)
    crop = Tool(
        name="crop",
        input_schema={"type": "object", "properties": {"image": {}, "boxes": {}}, "required": ["image", "boxes"]},
        annotations=looking,
    )
    ask = Tool(
        name="ask",
        input_schema={"type": "object", "properties": {"image": {}, "question": {}, "annotate": {}}},
        annotations=looking,
    )
    scene = tmp_path / "scene.png"

    assert arguments(crop, scene) == "needs boxes"
    assert arguments(ask, scene) == {
        "image": str(scene),
        "question": "How many blue shapes are there?",
        "annotate": True,
    }
