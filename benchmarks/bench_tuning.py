"""Bytes an agent carries per RL iteration, tools vs the raw API, printed as ratios from one run. Not a test.

One iteration = generate_rollouts (detect, 4 rollouts, ground truth) + train_step on that set.
    tools:  the tool results as the client receives them (text + structured content)
    raw:    the API's own responses for the same calls — and, since a raw-API agent must send the
            rollouts back, the train_step request it would have had to write too.      [target >= 20x]

Run: .venv/bin/python benchmarks/bench_tuning.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
from harness import KEY, serving
from PIL import Image, ImageDraw

from moondream_emulator import Emulator, EmulatorConfig

ITERATIONS = 5


async def run(workdir: Path) -> None:
    photo = workdir / "roof.jpg"
    image = Image.new("RGB", (1600, 1200), "white")
    ImageDraw.Draw(image).rectangle([400, 300, 900, 800], fill="orange")
    image.save(photo, quality=90)
    truth = {"boxes": [{"x_min": 0.25, "y_min": 0.25, "x_max": 0.5625, "y_max": 0.6667}]}
    emulator = Emulator(EmulatorConfig(keys=frozenset({KEY})))
    tool_bytes = raw_responses = raw_request = 0
    async with serving(emulator, workdir) as client:
        created = await client.call_tool("create_finetune", {"name": "bench-roofs", "rank": 8})
        finetune_id = created.structured_content["finetune_id"]
        emulator.clear()
        for _ in range(ITERATIONS):
            rollouts = await client.call_tool(
                "generate_rollouts",
                {
                    "finetune_id": finetune_id,
                    "skill": "detect",
                    "image": str(photo),
                    "object": "orange panel",
                    "num_rollouts": 4,
                    "ground_truth": truth,
                },
            )
            step = await client.call_tool(
                "train_step",
                {
                    "finetune_id": finetune_id,
                    "groups": [{"rollout_set_id": rollouts.structured_content["rollout_set_id"]}],
                },
            )
            assert not rollouts.is_error and not step.is_error
            for result in (rollouts, step):
                tool_bytes += len(result.model_dump_json(by_alias=True, exclude_none=True))
    for logged in emulator.requests:
        raw_responses += len(logged.response_text or "")
        if logged.path.endswith("/train_step"):
            raw_request += len(logged.body_text or "")
    per = ITERATIONS
    print(f"per RL iteration (detect, 4 rollouts, mean of {ITERATIONS}):")
    print(f"  tool results          {tool_bytes / per:10,.0f} bytes")
    print(
        f"  raw API responses     {raw_responses / per:10,.0f} bytes   = {raw_responses / tool_bytes:6.1f}x "
        "the tool results   [target >= 20x]"
    )
    print(
        f"  + train_step request  {(raw_responses + raw_request) / per:10,.0f} bytes   = "
        f"{(raw_responses + raw_request) / tool_bytes:6.1f}x   (what a raw-API agent writes back)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(run, Path(tmp))


if __name__ == "__main__":
    main()
