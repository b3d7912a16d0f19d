"""`moondream-mcp serve --emulator`: the real server over real stdio, backed by an emulator in its own
process, with no key; the instructions and every tool result say the answers are emulated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from moondream_mcp.emulated import NOTICE
from tests.support.calls import call
from tests.support.labelled import detect_dataset
from tests.support.pictures import assert_box, canvas, save
from tests.support.watching import finished, wait_for

pytestmark = pytest.mark.anyio


def _params(*args: str, data_dir: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOONDREAM")}
    env["MOONDREAM_MCP_DATA_DIR"] = str(data_dir)
    return StdioServerParameters(command=sys.executable, args=["-m", "moondream_mcp", *args], env=env)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_serve_with_the_emulator_answers_without_a_key_and_marks_every_result(
    mode: str, workdir: Path, tmp_path: Path
) -> None:
    image = save(canvas(), workdir / "square.png")
    params = _params("serve", "--emulator", str(workdir), data_dir=tmp_path / "data")
    with anyio.fail_after(60):
        async with Client(params, mode=mode) as client:
            instructions = client.instructions
            found = await client.call_tool("detect", {"image": image, "object": "red"})
            refused = await client.call_tool("detect", {"image": "/etc/passwd", "object": "red"})

    assert instructions is not None and instructions.startswith(NOTICE)
    assert not found.is_error
    assert found.content[0].text == NOTICE
    assert_box(found.structured_content["objects"][0], (0.25, 0.2, 0.5, 0.6))
    assert refused.is_error
    assert refused.content[0].text == NOTICE
    assert "outside the allowed directories" in refused.content[-1].text


async def test_the_emulated_server_keeps_its_state_apart_and_starts_it_afresh(workdir: Path, tmp_path: Path) -> None:
    # The emulator forgets its finetunes when it stops: runs stored against it must not outlive it.
    dataset = detect_dataset(workdir, count=4)
    data = tmp_path / "data"
    params = _params("serve", "--emulator", "--allowed-dirs", str(workdir), data_dir=data)
    runs: list[list[dict]] = []
    for first in (True, False):
        with anyio.fail_after(60):
            async with Client(params) as client:
                if first:
                    started = await call(client, "start_training", dataset=str(dataset), name="x", steps=1)
                    await wait_for(client, started["run_id"], finished)
                runs.append((await call(client, "list_runs"))["runs"])

    assert [len(r) for r in runs] == [1, 0]
    assert (data / "emulated" / "state.sqlite3").exists()
    assert not (data / "state.sqlite3").exists()  # the real server's state is another file
