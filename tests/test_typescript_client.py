"""A client not written in Python: the official TypeScript SDK lists the tools and calls detect over stdio.

The SDK is installed with npm into the test's own temporary directory; without node and npm, or without
a registry to install from, the test is skipped and says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.keys import API_KEY
from tests.support.npm import npm_project
from tests.support.pictures import assert_box, canvas, save
from tests.support.stdio import server_env

SCRIPT = """\
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [command, ...args] = JSON.parse(process.argv[2]);
const image = process.argv[3];
// The SDK passes only a few variables (PATH, HOME, ...) to the server unless told: pass ours on.
const transport = new StdioClientTransport({ command, args, env: { ...process.env }, stderr: "ignore" });
const client = new Client({ name: "moondream-mcp-ts-test", version: "0.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const result = await client.callTool({ name: "detect", arguments: { image, object: "red" } });
const refused = await client.callTool({ name: "detect", arguments: { image: "/etc/passwd", object: "red" } });
console.log(JSON.stringify({ server: client.getServerVersion(), tools: tools.map((t) => t.name), result, refused }));
await client.close();
"""


@pytest.fixture(scope="module")
def typescript_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with @modelcontextprotocol/sdk installed and the client script written."""
    return npm_project(
        tmp_path_factory.mktemp("ts-client"),
        {"name": "ts-client", "private": True, "type": "module"},
        "@modelcontextprotocol/sdk",
        {"client.mjs": SCRIPT},
        purpose="to run the TypeScript MCP SDK",
    )


def test_the_typescript_sdk_lists_the_tools_and_calls_detect_over_stdio(
    typescript_sdk: Path, emulator, workdir: Path, tmp_path: Path
) -> None:
    image = save(canvas(), workdir / "square.png")
    command = json.dumps([sys.executable, "-m", "moondream_mcp", "serve"])
    done = subprocess.run(
        ["node", "client.mjs", command, image],
        cwd=typescript_sdk,
        capture_output=True,
        text=True,
        timeout=90,
        env=server_env(emulator, workdir, tmp_path),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])

    assert answer["server"]["name"] == "moondream"
    assert {"caption", "query", "detect", "point", "segment", "train_step"} <= set(answer["tools"])
    result = answer["result"]
    assert result.get("isError") is not True
    assert result["structuredContent"]["count"] == 1
    assert_box(result["structuredContent"]["objects"][0], (0.25, 0.2, 0.5, 0.6))
    assert answer["refused"]["isError"] is True
    assert "outside the allowed directories" in answer["refused"]["content"][0]["text"]
    assert API_KEY not in done.stdout + done.stderr
