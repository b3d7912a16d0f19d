"""`moondream-mcp demo`: every vision tool and a two-step training run, called through the MCP protocol
against the built-in emulator, in a few seconds and without a key. What a newcomer runs first."""

from __future__ import annotations

import base64
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.types import CallToolResult, ImageContent, TextContent, Tool
from PIL import Image, ImageDraw

from .config import Settings
from .emulated import emulator_settings
from .server import build_server

# The skills first, in the order a person meets them; any other vision tool the server has follows.
FIRST = ("caption", "query", "detect", "point", "segment")
# What the demo passes for each parameter it knows; a vision tool needing anything else is skipped.
OBJECT = "blue square"
QUESTION = "How many blue shapes are there?"
PER_TOOL: dict[str, dict[str, Any]] = {"caption": {"length": "short"}, "segment": {"object": "red circle"}}
SCENE_SIZE = (640, 480)
PANEL = "orange"  # the emulator's base model misplaces orange, so training has something to improve
RUN_LIMIT = 60.0  # seconds the training run may take before the demo gives up on it

Write = Callable[[str], None]


def draw_scene(path: Path) -> Path:
    """Two blue squares, a red circle and a green bar on white: things the emulator can see."""
    image = Image.new("RGB", SCENE_SIZE, "white")
    pen = ImageDraw.Draw(image)
    pen.rectangle([60, 70, 179, 189], fill=(30, 80, 220))
    pen.rectangle([230, 70, 349, 189], fill=(30, 80, 220))
    pen.ellipse([400, 240, 579, 419], fill=(220, 20, 30))
    pen.rectangle([60, 300, 339, 359], fill=(0, 128, 0))
    image.save(path)
    return path


def write_dataset(folder: Path, count: int = 6) -> Path:
    """`count` pictures of one orange panel each, labelled for detect; the last two held out for evaluation."""
    rng = random.Random(7)
    width, height = 160, 120
    lines = []
    for i in range(count):
        x0, y0 = rng.randrange(8, 70), rng.randrange(6, 50)
        x1, y1 = x0 + rng.randrange(40, 80), y0 + rng.randrange(30, 60)
        picture = Image.new("RGB", (width, height), "white")
        ImageDraw.Draw(picture).rectangle([x0, y0, x1 - 1, y1 - 1], fill=PANEL)
        picture.save(folder / f"panel-{i}.png")
        box = {"x_min": x0 / width, "y_min": y0 / height, "x_max": x1 / width, "y_max": y1 / height}
        split = "eval" if i >= count - 2 else "train"
        example = {"image": f"panel-{i}.png", "skill": "detect", "object": f"{PANEL} panel", "boxes": [box]}
        lines.append(json.dumps({**example, "split": split}))
    dataset = folder / "panels.jsonl"
    dataset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dataset


def vision_tools(tools: list[Tool]) -> list[Tool]:
    """Read-only tools that look at one image, the five skills first."""
    looking = [
        t
        for t in tools
        if "image" in t.input_schema.get("properties", {}) and t.annotations and t.annotations.read_only_hint
    ]
    return sorted(looking, key=lambda t: (FIRST.index(t.name) if t.name in FIRST else len(FIRST), t.name))


def arguments(tool: Tool, scene: Path) -> dict[str, Any] | str:
    """The arguments the demo passes to `tool`, or why it cannot call it."""
    known: dict[str, Any] = {"image": str(scene), "object": OBJECT, "question": QUESTION, "annotate": True}
    known.update(PER_TOOL.get(tool.name, {}))
    properties = tool.input_schema.get("properties", {})
    chosen = {name: value for name, value in known.items() if name in properties}
    missing = [name for name in tool.input_schema.get("required", []) if name not in chosen]
    return f"needs {', '.join(missing)}" if missing else chosen


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pair(x: float, y: float) -> str:
    return f"({x:.2f}, {y:.2f})"


def summary(result: dict[str, Any]) -> str:
    """One short line for a tool's structured result."""
    if "caption" in result:
        return json.dumps(result["caption"])
    if "answer" in result:
        return json.dumps(result["answer"])
    if "objects" in result:
        boxes = " ".join(f"{_pair(b['x_min'], b['y_min'])}-{_pair(b['x_max'], b['y_max'])}" for b in result["objects"])
        return f"{result['count']} box(es) {boxes}"
    if "points" in result:
        return f"{result['count']} point(s) " + " ".join(_pair(p["x"], p["y"]) for p in result["points"])
    if "image_path" in result:
        box = result.get("bbox")
        where = f"{_pair(box['x_min'], box['y_min'])}-{_pair(box['x_max'], box['y_max'])}" if box else "nowhere"
        return f"outline of {len(result['image_path'])} path characters inside {where}"
    shown = {k: v for k, v in result.items() if k not in ("image", "request_id")}
    text = json.dumps(shown, separators=(",", ":"))
    return text if len(text) <= 100 else text[:97] + "..."


def save_pictures(result: CallToolResult, folder: Path, name: str) -> list[Path]:
    pictures = [c for c in result.content if isinstance(c, ImageContent)]
    saved = []
    for i, picture in enumerate(pictures, start=1):
        suffix = "" if len(pictures) == 1 else f"-{i}"
        path = folder / f"{name}{suffix}.{picture.mime_type.split('/')[-1]}"
        path.write_bytes(base64.b64decode(picture.data))
        saved.append(path)
    return saved


def _text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def _call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    if result.is_error:
        raise RuntimeError(f"{name} failed: {_text(result)}")
    return result.structured_content or {}


async def show_vision(client: Client, tools: list[Tool], scene: Path, out: Path, write: Write) -> None:
    for tool in vision_tools(tools):
        args = arguments(tool, scene)
        if isinstance(args, str):
            write(f"  {tool.name:<9} skipped: {args}")
            continue
        result = await client.call_tool(tool.name, args)
        asked = args.get("question") if tool.name == "query" else args.get("object")
        prefix = f"  {tool.name:<9} " + (f"{asked} -> " if asked else "")
        if result.is_error:
            # The message is the one the model would read: worth showing, not worth stopping for.
            write(prefix + "refused: " + _text(result)[-200:])
            continue
        write(prefix + summary(result.structured_content or {}))
        for path in save_pictures(result, out, tool.name):
            write(f"  {'':<9} picture: {path}")


async def show_training(client: Client, names: set[str], folder: Path, write: Write) -> None:
    if not {"start_training", "training_status"} <= names:
        write("  training  skipped: this server has no training tools (see MOONDREAM_MCP_TOOLSETS)")
        return
    dataset = write_dataset(folder)
    write(f"  training  2 steps on {dataset} (4 pictures to learn from, 2 to score)")
    started = await _call(
        client,
        "start_training",
        {"dataset": str(dataset), "name": "demo", "steps": 2, "groups_per_step": 2, "rollouts_per_group": 2},
    )
    with anyio.fail_after(RUN_LIMIT):
        status = started
        while status["state"] == "running":
            status = await _call(client, "training_status", {"run_id": started["run_id"], "wait_seconds": 10})
    if status["state"] != "completed":
        raise RuntimeError(f"the training run ended {status['state']}: {status.get('last_error')}")
    for step in status["steps"]:
        write(f"  {'':<9} step {step['step']}: mean reward {_number(step['reward_mean'])}")
    for evaluation in status["evals"]:
        write(f"  {'':<9} eval after step {evaluation['step']}: score {_number(evaluation['score'])}")
    model = status["best_model"] or status["last_model"]
    write(f"  {'':<9} checkpoint: {model}")
    if model and "detect" in names:
        found = await _call(
            client, "detect", {"image": str(folder / "panel-4.png"), "object": "orange panel", "model": model}
        )
        write(f"  {'':<9} detect with it -> {summary(found)}")


async def demo(out: Path, write: Write) -> None:
    started = time.monotonic()
    write(
        "moondream-mcp demo. The answers below come from the built-in EMULATOR of the Moondream API, not from a "
        "model:\nit sees only solid-coloured regions and names them by colour. With your key the same calls reach "
        "Moondream.\n"
    )
    scene = draw_scene(out / "scene.png")
    write(f"  scene     {scene} (two blue squares, a red circle, a green bar)")
    base = Settings(allowed_dirs=[out], data_dir=out / "state")
    with emulator_settings(base) as settings:
        async with Client(build_server(settings, emulated_api=True)) as client:
            tools = (await client.list_tools()).tools
            await show_vision(client, tools, scene, out, write)
            await show_training(client, {t.name for t in tools}, out, write)
    write(f"\nDone in {time.monotonic() - started:.1f} s; files in {out}")
    write("Next: `moondream-mcp serve --emulator` in your MCP client, or set MOONDREAM_API_KEY for real answers.")


def run_demo(output: Path | None = None, write: Write | None = None) -> int:
    """Run the demo, writing to stdout (this is a command a person runs, not the stdio server); 0 on success."""
    out = output or Path(tempfile.mkdtemp(prefix="moondream-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    say = write or (lambda line: print(line, flush=True))
    try:
        anyio.run(demo, out.resolve(), say)
    except (RuntimeError, TimeoutError) as exc:
        sys.stderr.write(f"moondream-mcp demo: {exc}\n")
        return 1
    return 0
