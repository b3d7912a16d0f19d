"""The kept tool list: a server lists exactly what building every tool lists, from a copy kept in the data
directory when one made by this very code is there, rebuilding it otherwise; a tool listed from the copy is built
when it is called, and behaves as one built at start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest
from mcp import Client

from moondream_mcp.config import Settings
from moondream_mcp.server import LISTING_FILE, build_server
from moondream_mcp.tools.listing import Declared, KeptListing, LazyTools
from tests.support.calls import call, refusal
from tests.support.pictures import canvas, save
from tests.support.stdio import StdioPeer, rpc, server_env

pytestmark = pytest.mark.anyio


async def listing(settings: Settings, kept: Path | None) -> list[dict]:
    async with Client(build_server(settings, listing=kept)) as client:
        return [tool.model_dump(by_alias=True, exclude_none=True) for tool in (await client.list_tools()).tools]


@pytest.fixture
def kept(settings: Settings) -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / LISTING_FILE


def mark_caption(kept: Path) -> None:
    """Change caption's kept input schema in a way only a server reading the copy would list."""
    data = json.loads(kept.read_text())
    (version,) = data["tools"]["caption"].values()
    version["input"]["properties"]["image"]["description"] = "READ FROM THE COPY"
    kept.write_text(json.dumps(data))


def caption_image(tools: list[dict]) -> str:
    (caption,) = [t for t in tools if t["name"] == "caption"]
    return caption["inputSchema"]["properties"]["image"]["description"]


async def test_the_kept_list_is_what_building_every_tool_lists(settings: Settings, kept: Path) -> None:
    built = await listing(settings, None)
    assert not kept.exists()
    assert await listing(settings, kept) == built  # made
    assert kept.exists()
    assert await listing(settings, kept) == built  # read


@pytest.mark.parametrize("setting", [{"toolsets": ["vision"]}, {"read_only": True}, {"toolsets": ["batch", "video"]}])
async def test_every_setting_lists_the_same_from_one_kept_copy(settings: Settings, kept: Path, setting: dict) -> None:
    await listing(settings, kept)  # the copy made for every toolset
    chosen = settings.model_copy(update=setting)
    assert await listing(chosen, kept) == await listing(chosen, None)
    # enable_toolset's description names the toolsets left, so each setting keeps a version of its own.
    assert await listing(settings, kept) == await listing(settings, None)


async def test_a_second_start_lists_from_the_copy(settings: Settings, kept: Path) -> None:
    await listing(settings, kept)
    mark_caption(kept)
    assert caption_image(await listing(settings, kept)) == "READ FROM THE COPY"


async def test_a_copy_made_by_other_code_is_rebuilt_not_served(settings: Settings, kept: Path) -> None:
    await listing(settings, kept)
    mark_caption(kept)
    data = json.loads(kept.read_text())
    data["key"] = "0" * 32  # as if the package had changed since
    kept.write_text(json.dumps(data))
    assert caption_image(await listing(settings, kept)) != "READ FROM THE COPY"
    assert json.loads(kept.read_text())["key"] == KeptListing(kept).key


def garbled(key: str, description: str) -> list[object]:
    """Copies with the right key that are no copy of ours: not JSON, the wrong shapes, nesting past any parser."""
    return [
        b"\x00\xff not json",
        [],
        {"key": key, "tools": []},
        {"key": key, "tools": {"caption": {description: {"input": 1, "output": None}}}},
        {"key": key, "tools": {"caption": {description: {"input": {}, "output": "x"}}}},
        {"key": key, "tools": {"caption": 7}},
        b"[" * 100_000,
    ]


@pytest.mark.parametrize("which", range(7))
async def test_an_unreadable_copy_is_rebuilt(settings: Settings, kept: Path, which: int) -> None:
    built = await listing(settings, None)
    (caption,) = [t for t in built if t["name"] == "caption"]
    content = garbled(KeptListing(kept).key, caption["description"])[which]
    kept.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    assert await listing(settings, kept) == built
    assert await listing(settings, kept) == built


async def test_a_kept_schema_the_sdk_cannot_send_is_built_again(settings: Settings, kept: Path) -> None:
    built = await listing(settings, kept)
    data = json.loads(kept.read_text())
    (version,) = data["tools"]["caption"].values()
    deep: dict = {}
    for _ in range(400):
        deep = {"anyOf": [deep]}
    version["input"]["properties"]["image"] = deep
    kept.write_text(json.dumps(data))
    assert await listing(settings, kept) == built
    (version,) = json.loads(kept.read_text())["tools"]["caption"].values()
    assert "anyOf" not in version["input"]["properties"]["image"]  # the copy is mended too


async def test_a_pipe_where_the_copy_should_be_is_not_waited_on(settings: Settings, kept: Path) -> None:
    os.mkfifo(kept)
    with anyio.fail_after(30):
        assert await listing(settings, kept) == await listing(settings, None)


async def test_a_copy_too_large_to_be_ours_is_not_read(settings: Settings, kept: Path) -> None:
    await listing(settings, kept)
    mark_caption(kept)
    data = json.loads(kept.read_text())
    data["padding"] = "x" * (5 * 1024 * 1024)
    kept.write_text(json.dumps(data))
    assert caption_image(await listing(settings, kept)) != "READ FROM THE COPY"


async def test_a_data_directory_that_cannot_take_the_copy_only_costs_time(settings: Settings, tmp_path: Path) -> None:
    nowhere = tmp_path / "missing" / LISTING_FILE
    assert await listing(settings, nowhere) == await listing(settings, None)
    assert not nowhere.parent.exists()


async def test_a_tool_listed_from_the_copy_is_built_when_called(settings: Settings, kept: Path, workdir: Path) -> None:
    await listing(settings, kept)
    photo = save(canvas(), workdir / "photo.jpg")
    async with Client(build_server(settings, listing=kept)) as client:
        await client.list_tools()
        assert (await call(client, "caption", image=str(photo)))["caption"]
        # Its arguments are checked against its own model, and told in sentences.
        message = await refusal(client, "detect", image=str(photo), object="cat", max_objects="many")
        assert "max_objects" in message and "pydantic" not in message


async def test_enable_toolset_adds_tools_the_copy_lists(settings: Settings, kept: Path) -> None:
    vision = settings.model_copy(update={"toolsets": ["vision"]})
    await listing(settings, kept)
    async with Client(build_server(vision, listing=kept)) as client:
        await call(client, "enable_toolset", toolset="batch")
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert names[-6:] == ["enable_toolset", "batch", "submit_batch", "batch_status", "list_batches", "batch_results"]


def test_the_console_script_keeps_its_tool_list_in_the_data_directory(emulator, workdir: Path, tmp_path: Path) -> None:
    env = server_env(emulator, workdir, tmp_path)

    def tools_listed() -> list[dict]:
        peer = StdioPeer(env)
        try:
            return peer.answer(rpc(1, "tools/list"))["result"]["tools"]
        finally:
            peer.close()

    first = tools_listed()
    kept = Path(env["MOONDREAM_MCP_DATA_DIR"]) / LISTING_FILE
    made = os.stat(kept)
    assert tools_listed() == first
    again = os.stat(kept)
    assert (again.st_ino, again.st_mtime_ns) == (made.st_ino, made.st_mtime_ns)  # read, not made again


def test_an_offered_tool_is_the_sdk_tool_of_that_name_once_built() -> None:
    async def first(x: int) -> str:
        """The offered one."""
        return "first"

    async def second(y: str) -> str:
        return "second"

    tools = LazyTools()
    tools.offer(first, Declared("First", "The offered one.", None))
    assert tools.add_tool(second, name="first").fn is first  # as the SDK keeps the first of a name
    tools.offer(second, Declared("Second", "Another.", None))
    assert [t.name for t in tools.list_tools()] == ["first", "second"]  # every tool, built
    tools.remove_tool("second")
    assert tools.names == ["first"] and tools.get_tool("second") is None


async def test_a_removed_tool_is_no_longer_listed(settings: Settings, kept: Path) -> None:
    server = build_server(settings, listing=kept)
    await server.list_tools()
    server.remove_tool("caption")
    server.remove_tool("zoom")  # listed, never built
    names = [tool.name for tool in await server.list_tools()]
    assert "caption" not in names and "zoom" not in names and "detect" in names
