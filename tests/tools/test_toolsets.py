"""Toolsets through the protocol: which tools a setting lists, what read-only mode keeps, and enable_toolset
turning a toolset on mid-session while the client is told the list changed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.types import ToolAnnotations, ToolListChangedNotification

from moondream_mcp.config import Settings
from moondream_mcp.server import ToolsetError, build_server
from moondream_mcp.tools.toolsets import Toolbox
from tests.support.calls import call
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio

VISION = {"caption", "query", "detect", "point", "segment", "ask", "zoom"}
TUNING = {
    "create_finetune",
    "list_finetunes",
    "get_finetune",
    "delete_finetune",
    "generate_rollouts",
    "train_step",
    "list_checkpoints",
    "save_checkpoint",
    "delete_checkpoint",
    "log_metrics",
}
BATCH = {"batch", "submit_batch", "batch_status", "list_batches", "batch_results"}
TRAINING = {
    "import_dataset",
    "inspect_dataset",
    "start_training",
    "training_status",
    "stop_training",
    "list_runs",
    "evaluate",
    "label_images",
    "review_labels",
    "fix_labels",
    "export_dataset",
}
VIDEO = {"detect_video", "redact_video"}
# Nothing here changes anything remote, spends more than one inference call, or writes outside the data dir.
READ_ONLY = {
    *VISION,
    "list_finetunes",
    "get_finetune",
    "list_checkpoints",
    "batch_status",
    "list_batches",
    "inspect_dataset",
    "training_status",
    "list_runs",
    "review_labels",
}


async def listed(settings: Settings) -> set[str]:
    async with Client(build_server(settings)) as client:
        return {t.name for t in (await client.list_tools()).tools}


async def test_every_toolset_is_offered_by_default(settings: Settings) -> None:
    assert await listed(settings) == VISION | TUNING | BATCH | TRAINING | VIDEO


async def test_a_vision_only_server_lists_the_vision_tools_and_the_switch(settings: Settings) -> None:
    assert await listed(settings.model_copy(update={"toolsets": ["vision"]})) == VISION | {"enable_toolset"}


async def test_toolsets_combine(settings: Settings) -> None:
    chosen = settings.model_copy(update={"toolsets": ["batch", "training"]})
    assert await listed(chosen) == BATCH | TRAINING | {"enable_toolset"}


def test_toolsets_come_from_the_environment_as_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONDREAM_MCP_TOOLSETS", " Vision, tuning ,")
    monkeypatch.setenv("MOONDREAM_MCP_READ_ONLY", "true")
    settings = Settings()
    assert (settings.toolsets, settings.read_only) == (["vision", "tuning"], True)


def test_an_unknown_toolset_stops_the_server_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ToolsetError) as refused:
        build_server(Settings(toolsets=["vision", "visoin"], data_dir=tmp_path))
    assert str(refused.value) == (
        "unknown toolset visoin in MOONDREAM_MCP_TOOLSETS / --toolsets; "
        "the toolsets are vision, tuning, batch, training, video (or all)"
    )


async def test_read_only_mode_keeps_only_tools_that_change_nothing(settings: Settings) -> None:
    async with Client(build_server(settings.model_copy(update={"read_only": True}))) as client:
        tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == READ_ONLY
    assert all(t.annotations.read_only_hint and not t.annotations.destructive_hint for t in tools)


async def test_read_only_mode_saves_pictures_only_in_the_data_directory(settings: Settings, workdir: Path) -> None:
    photo = save(canvas(), workdir / "photo.png")
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    async with Client(build_server(settings.model_copy(update={"read_only": True}))) as client:
        refused = await client.call_tool(
            "detect", {"image": str(photo), "object": "square", "annotate": True, "save_to": str(elsewhere)}
        )
        kept = await client.call_tool("detect", {"image": str(photo), "object": "square", "annotate": True})
    assert refused.is_error and "read-only" in refused.content[0].text
    assert list(elsewhere.iterdir()) == []
    assert not kept.is_error
    assert Path(kept.structured_content["picture"]).resolve().is_relative_to(settings.data_dir.resolve())


async def test_read_only_mode_with_fewer_toolsets_offers_only_read_only_tools_later(settings: Settings) -> None:
    chosen = settings.model_copy(update={"toolsets": ["vision"], "read_only": True})
    async with Client(build_server(chosen)) as client:
        enabled = await call(client, "enable_toolset", toolset="tuning")
        names = {t.name for t in (await client.list_tools()).tools}
    assert set(enabled["tools"]) == {"list_finetunes", "get_finetune", "list_checkpoints"}
    assert names == VISION | {"list_finetunes", "get_finetune", "list_checkpoints", "enable_toolset"}


async def test_enable_toolset_lists_the_toolset_and_tells_a_handshake_era_client(settings: Settings) -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, ToolListChangedNotification):
            changed.set()

    chosen = settings.model_copy(update={"toolsets": ["vision"]})
    async with Client(build_server(chosen), mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools.list_changed is True
        before = {t.name for t in (await client.list_tools()).tools}
        enabled = await call(client, "enable_toolset", toolset="tuning")
        with anyio.fail_after(10):
            await changed.wait()
        after = {t.name for t in (await client.list_tools()).tools}
        finetune = await call(client, "create_finetune", name="enabled-mid-session", rank=8)
    assert before == VISION | {"enable_toolset"}
    assert set(enabled["tools"]) == TUNING and after == before | TUNING
    assert finetune["name"] == "enabled-mid-session"


async def test_enable_toolset_tells_a_listening_2026_client(settings: Settings) -> None:
    chosen = settings.model_copy(update={"toolsets": ["vision"]})
    async with Client(build_server(chosen)) as client, client.listen(tools_list_changed=True) as events:
        await call(client, "enable_toolset", toolset="batch")
        with anyio.fail_after(10):
            event = await events.__anext__()
        names = {t.name for t in (await client.list_tools()).tools}
    assert type(event).__name__ == "ToolsListChanged"
    assert names == VISION | BATCH | {"enable_toolset"}


async def test_a_toolset_already_on_changes_nothing(settings: Settings) -> None:
    chosen = settings.model_copy(update={"toolsets": ["vision"]})
    async with Client(build_server(chosen)) as client:
        await call(client, "enable_toolset", toolset="batch")
        again = await call(client, "enable_toolset", toolset="batch")
        names = {t.name for t in (await client.list_tools()).tools}
    assert again == {"toolset": "batch", "tools": [], "message": "batch is already on."}
    assert names == VISION | BATCH | {"enable_toolset"}


async def test_enabled_tools_work(settings: Settings, workdir: Path) -> None:
    image = save(canvas(), workdir / "square.png")
    chosen = settings.model_copy(update={"toolsets": ["batch"]})
    async with Client(build_server(chosen)) as client:
        await call(client, "enable_toolset", toolset="vision")
        found = await call(client, "detect", image=image, object="red")
    assert found["count"] == 1


def test_a_tool_that_modifies_cannot_be_declared_read_only() -> None:
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=True)
    with pytest.raises(ValueError, match="declared read_only"):
        Toolbox().tool("tuning", title="Delete", annotations=writes, read_only=True)


def test_a_new_toolset_needs_only_its_name() -> None:
    tools = Toolbox()

    @tools.tool("video", title="Detect in a video", annotations=ToolAnnotations(read_only_hint=True), read_only=True)
    async def detect_video() -> None:
        """Find objects in a video."""

    assert tools.toolsets == {"video": ["detect_video"]}
    assert tools.choose(["all"]) == ["video"]
