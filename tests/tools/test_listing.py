"""The kept tool list: a server lists exactly what building every tool lists, from a copy kept in the data
directory when one made by this very code is there, rebuilding it otherwise; a tool listed from the copy is built
when it is called, and behaves as one built at start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mcp import Client

from moondream_mcp.config import Settings
from moondream_mcp.server import LISTING_FILE, build_server
from moondream_mcp.tools.listing import KeptListing
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


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff not json",
        b"[]",
        b'{"key": "%s", "tools": []}',
        b'{"key": "%s", "tools": {"caption": {"x": {"input": 1, "output": null}}}}',
        b'{"key": "%s", "tools": {"caption": 7}}',
        b"[" * 100_000,
    ],
)
async def test_an_unreadable_copy_is_rebuilt(settings: Settings, kept: Path, content: bytes) -> None:
    built = await listing(settings, None)
    kept.write_bytes(content.replace(b"%s", KeptListing(kept).key.encode()))
    assert await listing(settings, kept) == built
    assert await listing(settings, kept) == built


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
    made_at = os.stat(kept).st_mtime_ns
    assert tools_listed() == first
    assert os.stat(kept).st_mtime_ns == made_at  # read, not made again
