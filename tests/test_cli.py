"""The console script over real stdio: stdout carries protocol messages only; legacy and modern clients work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from moondream_mcp import __version__, cli
from tests.support.keys import API_KEY
from tests.support.pictures import assert_box, canvas, save
from tests.support.stdio import rpc, server_env

pytestmark = pytest.mark.anyio


async def test_stdout_carries_only_protocol_messages(emulator, workdir: Path, tmp_path: Path) -> None:
    image = save(canvas(), workdir / "square.png")
    lines: list[str] = []
    errors: list[bytes] = []

    async def drain(stream) -> None:
        # Read stderr as it comes, so a chatty log can never fill the pipe and stall the server.
        async for chunk in stream:
            errors.append(chunk)

    with anyio.fail_after(60):
        async with (
            await anyio.open_process(
                [sys.executable, "-m", "moondream_mcp", "--log-level", "DEBUG"],
                env=server_env(emulator, workdir, tmp_path),
            ) as process,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(drain, process.stderr)
            for message in (
                rpc(
                    1,
                    "initialize",
                    {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "raw-test", "version": "0"},
                    },
                ),
                rpc(None, "notifications/initialized"),
                rpc(2, "tools/list"),
                rpc(3, "tools/call", {"name": "detect", "arguments": {"image": image, "object": "red"}}),
                rpc(4, "tools/call", {"name": "detect", "arguments": {"image": "/etc/passwd", "object": "red"}}),
            ):
                await process.stdin.send(message)
            buffer = b""
            answered: set[int] = set()
            async for chunk in process.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    lines.append(line.decode())
                    answered.add(json.loads(line).get("id"))
                if {1, 2, 3, 4} <= answered:
                    break
            await process.stdin.aclose()
            await process.wait()
    stderr = b"".join(errors).decode(errors="replace")

    messages = [json.loads(line) for line in lines]  # every line is JSON: nothing else on stdout
    assert all(m["jsonrpc"] == "2.0" for m in messages)
    by_id = {m.get("id"): m for m in messages}
    assert {t["name"] for t in by_id[2]["result"]["tools"]} >= {"caption", "query", "detect", "point", "segment"}
    assert_box(by_id[3]["result"]["structuredContent"]["objects"][0], (0.25, 0.2, 0.5, 0.6))
    assert by_id[4]["result"]["isError"] is True
    assert API_KEY not in "\n".join(lines) + stderr


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdk_client_works_over_stdio(mode: str, emulator, workdir: Path, tmp_path: Path) -> None:
    image = save(canvas(), workdir / "square.png")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "moondream_mcp", "serve"], env=server_env(emulator, workdir, tmp_path)
    )
    with anyio.fail_after(60):
        async with Client(params, mode=mode) as client:
            result = await client.call_tool("point", {"image": image, "object": "red"})
    assert not result.is_error
    assert result.structured_content["points"][0] == pytest.approx({"x": 0.375, "y": 0.4}, abs=0.02)


def test_the_console_script_prints_its_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "moondream_mcp", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("moondream-mcp ")


def test_directories_named_after_serve_join_the_allowed_directories(tmp_path: Path) -> None:
    # A desktop bundle passes the folders a person picked as separate arguments after `serve`.
    first, second, third = (tmp_path / name for name in ("pictures", "scans", "downloads"))
    args = cli.parser().parse_args(["serve", "--allowed-dirs", str(first), str(second), str(third)])
    assert cli._settings(args).allowed_dirs == [first, second, third]


async def test_on_start_one_line_on_stderr_says_what_runs_without_secrets(
    emulator, workdir: Path, tmp_path: Path
) -> None:
    env = server_env(emulator, workdir, tmp_path)
    env.update(
        MOONDREAM_ENDPOINT="http://someone:hunter2@127.0.0.1:9/v1?key=s3cret#frag",
        MOONDREAM_MCP_TOOLSETS="vision",
        MOONDREAM_MCP_READ_ONLY="true",
    )
    with anyio.fail_after(60):
        async with await anyio.open_process([sys.executable, "-m", "moondream_mcp"], env=env) as process:
            seen = b""
            async for chunk in process.stderr:
                seen += chunk
                if b"\n" in seen:
                    break
            await process.stdin.aclose()
            await process.wait()
    line = seen.split(b"\n")[0].decode()

    assert line == (
        f"moondream-mcp {__version__} on stdio; toolsets vision (8 tools); read-only; "
        f"endpoint http://127.0.0.1:9/v1; allowed dirs {workdir}; waiting for a client"
    )
    assert not {"hunter2", "s3cret", "someone", API_KEY} & set(line.replace(";", " ").split())


def test_an_unknown_toolset_stops_the_console_script_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOONDREAM")}
    env["MOONDREAM_MCP_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "moondream_mcp", "--toolsets", "vision,videos"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "moondream-mcp: unknown toolset videos in MOONDREAM_MCP_TOOLSETS / --toolsets; "
        "the toolsets are vision, tuning, batch, training, video (or all)\n"
    )
