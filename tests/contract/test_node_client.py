"""The official Node client (moondream 0.2.0 on npm), unmodified, against the emulator: every call it has.

Installed with npm into the test's own temporary directory; without node and npm, or without a registry to
install from, the test is skipped and says why. The client depends on sharp ^0.32, whose install script
downloads libvips from GitHub: the package.json overrides sharp with 0.33, which ships libvips as npm
packages and keeps the API the client uses (metadata, toFormat, toBuffer).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.keys import API_KEY
from tests.support.npm import npm_project
from tests.support.pictures import assert_box, canvas, save

NODE_CLIENT = "moondream@0.2.0"
RED = (0.25, 0.2, 0.5, 0.6)
BLUE = (0.6, 0.55, 0.9, 0.9)

SCRIPT = """\
const fs = require("fs");
const { vl } = require("moondream");

const [endpoint, apiKey, imagePath] = process.argv.slice(2);
const join = async (chunks) => { let text = ""; for await (const c of chunks) text += c; return text; };

(async () => {
  const model = new vl({ apiKey, endpoint });
  const image = fs.readFileSync(imagePath);
  const out = {};
  out.caption = (await model.caption({ image, length: "short" })).caption;
  out.captionStreamed = await join((await model.caption({ image, length: "short", stream: true })).caption);
  const ask = { image, question: "How many red shapes are there?" };
  out.query = (await model.query(ask)).answer;
  out.queryStreamed = await join((await model.query({ ...ask, stream: true })).answer);
  out.reasoned = await model.query({ image, question: "How many blue shapes?", reasoning: true });
  out.textOnly = (await model.query({ question: "What is two plus two?" })).answer;
  out.detect = (await model.detect({ image, object: "red square" })).objects;
  out.point = (await model.point({ image, object: "red square" })).points;
  out.segment = await model.segment({ image, object: "blue", spatialRefs: [[0.75, 0.7]] });
  out.segmentStreamed = [];
  for await (const update of (await model.segment({ image, object: "blue", stream: true })).stream) {
    out.segmentStreamed.push(update);
  }
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the moondream Node client installed and the calling script written."""
    manifest = {"name": "node-client", "private": True, "overrides": {"sharp": "^0.33.5"}}
    return npm_project(
        tmp_path_factory.mktemp("node-client"),
        manifest,
        NODE_CLIENT,
        {"client.cjs": SCRIPT},
        purpose="to run the official Node client",
    )


def test_the_official_node_client_gets_every_answer_right(node_client: Path, emulator, tmp_path: Path) -> None:
    image = save(canvas((400, 300), [("red", RED), ("blue", BLUE)]), tmp_path / "shapes.png")
    done = subprocess.run(
        ["node", "client.cjs", emulator.url, API_KEY, image],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "red" in out["caption"].lower() and out["captionStreamed"] == out["caption"]
    assert out["query"] == out["queryStreamed"] == "1"
    assert out["reasoned"]["answer"] == "1" and out["reasoned"]["reasoning"]["grounding"]
    assert out["textOnly"]
    (found,) = out["detect"]
    assert_box(found, RED)
    (point,) = out["point"]
    assert (point["x"], point["y"]) == pytest.approx((0.375, 0.4), abs=0.02)
    assert_box(out["segment"]["bbox"], BLUE)
    assert out["segment"]["path"].startswith("M ")
    assert_box(out["segmentStreamed"][0]["bbox"], BLUE)
    assert out["segmentStreamed"][-1] == {**out["segment"], "completed": True}
    assert all(r.status == 200 for r in emulator.emulator.requests)
