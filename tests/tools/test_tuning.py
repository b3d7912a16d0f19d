"""The tuning tools through the protocol against the emulator: the whole RL loop, and every guard around it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

import anyio
import pytest
from mcp import Client, StdioServerParameters

from moondream_mcp.client import rawjson
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal, unique
from tests.support.pictures import assert_box, canvas, save
from tests.support.stdio import server_env

pytestmark = pytest.mark.anyio

ORANGE = (0.3, 0.25, 0.6, 0.7)
TRUTH = {"boxes": [dict(zip(("x_min", "y_min", "x_max", "y_max"), ORANGE))]}


@pytest.fixture
def photo(workdir: Path) -> str:
    return save(canvas((320, 240), [("orange", ORANGE)]), workdir / "roof.png")


async def rollouts(client: Client, finetune_id: str, photo: str, **extra: object) -> dict:
    return await call(
        client,
        "generate_rollouts",
        finetune_id=finetune_id,
        skill="detect",
        image=photo,
        object="orange panel",
        num_rollouts=4,
        ground_truth=TRUTH,
        **extra,
    )


async def test_the_rl_loop_raises_reward_and_the_saved_checkpoint_detects(client: Client, photo: str) -> None:
    # A fixed name: the emulator seeds a finetune's sampling from its name, so this run replays exactly.
    finetune = await call(client, "create_finetune", name="roof-panels-rl-loop", rank=8)
    means = []
    for _ in range(12):
        batch = await rollouts(client, finetune["finetune_id"], photo)
        means.append(mean(batch["rewards"]))
        step = await call(
            client,
            "train_step",
            finetune_id=finetune["finetune_id"],
            groups=[{"rollout_set_id": batch["rollout_set_id"]}],
        )
        assert step["applied"] is not False
    assert mean(means[-3:]) > mean(means[:3]) + 0.05, means

    saved = await call(client, "save_checkpoint", finetune_id=finetune["finetune_id"])
    assert saved["model"] == f"moondream3-preview/{finetune['finetune_id']}@{saved['checkpoint']['step']}"
    listed = await call(client, "list_checkpoints", finetune_id=finetune["finetune_id"])
    assert [c["model"] for c in listed["checkpoints"]] == [saved["model"]]
    found = await call(client, "detect", image=photo, object="orange", model=saved["model"])
    assert found["count"] == 1
    assert_box(found["objects"][0], ORANGE, tolerance=0.05)


async def test_train_step_sends_back_the_rollouts_byte_for_byte_in_order(client: Client, photo: str, emulator) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=16)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    await call(
        client,
        "train_step",
        finetune_id=finetune["finetune_id"],
        groups=[{"rollout_set_id": batch["rollout_set_id"], "rewards": [0.1, 0.2, 0.3, 0.4]}],
    )
    log = emulator.emulator.requests
    sent = next(r for r in log if r.path.endswith("/tuning/rollouts")).response_text
    step = next(r for r in log if r.path.endswith("/tuning/train_step")).body_text
    ((group_start, _),) = [rawjson.items(step, rawjson.members(step)["groups"][0])[0]]
    group = rawjson.members(step, group_start)
    received = [step[a:b] for a, b in rawjson.items(step, group["rollouts"][0])]
    assert received == rawjson.array_items(sent, "rollouts")
    assert step[slice(*group["request"])] == rawjson.member(sent, "request")
    body = json.loads(step)
    assert body["groups"][0]["mode"] == "rl" and body["groups"][0]["rewards"] == [0.1, 0.2, 0.3, 0.4]
    assert "lr" not in body


async def test_the_agent_sees_neither_token_data_nor_the_image(client: Client, photo: str) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    result = await client.call_tool(
        "generate_rollouts",
        {
            "finetune_id": finetune["finetune_id"],
            "skill": "detect",
            "image": photo,
            "object": "orange",
            "ground_truth": TRUTH,
        },
    )
    text = result.content[0].text + json.dumps(result.structured_content)
    assert "data:image" not in text and "tokens" not in text
    assert len(result.structured_content["outputs"]) == 4
    assert all("objects" in o for o in result.structured_content["outputs"])


async def test_a_used_rollout_set_is_refused_unless_reuse_is_allowed(client: Client, photo: str) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    groups = [{"rollout_set_id": batch["rollout_set_id"]}]
    await call(client, "train_step", finetune_id=finetune["finetune_id"], groups=groups)
    text = await refusal(client, "train_step", finetune_id=finetune["finetune_id"], groups=groups)
    assert "already used" in text and "allow_reuse" in text
    await call(client, "train_step", finetune_id=finetune["finetune_id"], groups=groups, allow_reuse=True, lr=1e-4)


async def test_rewards_must_match_the_rollout_count(client: Client, photo: str) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    text = await refusal(
        client,
        "train_step",
        finetune_id=finetune["finetune_id"],
        groups=[{"rollout_set_id": batch["rollout_set_id"], "rewards": [1.0]}],
    )
    assert "4 rollouts" in text


async def test_a_timeout_after_sending_is_reported_as_unknown_and_not_retried(
    settings: Settings, photo: str, emulator
) -> None:
    async with Client(build_server(settings.model_copy(update={"timeout": 1.0}))) as client:
        finetune = await call(client, "create_finetune", name=unique(), rank=8)
        batch = await rollouts(client, finetune["finetune_id"], photo)
        emulator.emulator.inject_delay(3.0, path="/train_step")
        groups = [{"rollout_set_id": batch["rollout_set_id"]}]
        text = await refusal(client, "train_step", finetune_id=finetune["finetune_id"], groups=groups)
        assert "outcome unknown" in text and "list_checkpoints" in text
        assert len([r for r in emulator.emulator.requests if r.path.endswith("/train_step")]) == 1
        # The set was left unused, so it can be sent again once the agent has checked.
        await call(client, "train_step", finetune_id=finetune["finetune_id"], groups=groups)


async def test_a_server_error_on_train_step_is_not_retried(client: Client, photo: str, emulator) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    emulator.emulator.inject(503, path="/train_step")
    text = await refusal(
        client, "train_step", finetune_id=finetune["finetune_id"], groups=[{"rollout_set_id": batch["rollout_set_id"]}]
    )
    assert "outcome unknown" in text and "503" in text
    assert len([r for r in emulator.emulator.requests if r.path.endswith("/train_step")]) == 1


async def test_a_429_on_train_step_is_retried(client: Client, photo: str, emulator) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    emulator.emulator.inject(429, retry_after=0.2, path="/train_step")
    out = await call(
        client, "train_step", finetune_id=finetune["finetune_id"], groups=[{"rollout_set_id": batch["rollout_set_id"]}]
    )
    assert out["step"] == 1


async def test_a_restarted_server_process_still_applies_stored_rollouts(
    emulator, workdir: Path, tmp_path: Path, photo: str
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "moondream_mcp"], env=server_env(emulator, workdir, tmp_path)
    )
    with anyio.fail_after(60):
        async with Client(params) as first:
            finetune = await call(first, "create_finetune", name=unique(), rank=8)
            batch = await rollouts(first, finetune["finetune_id"], photo)
        async with Client(params) as second:
            out = await call(
                second,
                "train_step",
                finetune_id=finetune["finetune_id"],
                groups=[{"rollout_set_id": batch["rollout_set_id"]}],
            )
    assert out["step"] == 1


async def test_same_name_and_rank_is_the_same_finetune_but_another_rank_is_refused(client: Client) -> None:
    name = unique()
    first = await call(client, "create_finetune", name=name, rank=8)
    again = await call(client, "create_finetune", name=name, rank=8)
    assert again["finetune_id"] == first["finetune_id"]
    text = await refusal(client, "create_finetune", name=name, rank=16)
    assert "409" in text


async def test_deleting_an_unknown_checkpoint_is_a_clear_error(client: Client) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    text = await refusal(client, "delete_checkpoint", finetune_id=finetune["finetune_id"], step=7)
    assert "404" in text


async def test_an_sft_target_breaking_the_rules_is_refused_before_sending(client: Client, photo: str, emulator) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    text = await refusal(
        client,
        "train_step",
        finetune_id=finetune["finetune_id"],
        groups=[
            {
                "skill": "point",
                "image": photo,
                "object": "orange",
                "target": {"points": [{"x": 0.4, "y": 0.4}], "boxes": [TRUTH["boxes"][0]]},
            }
        ],
    )
    assert "exactly one" in text
    assert not [r for r in emulator.emulator.requests if r.path.endswith("/train_step")]


async def test_an_sft_step_applies(client: Client, photo: str, emulator) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    out = await call(
        client,
        "train_step",
        finetune_id=finetune["finetune_id"],
        groups=[
            {"skill": "detect", "image": photo, "object": "orange", "target": {"boxes": TRUTH["boxes"]}},
            {"skill": "query", "image": photo, "question": "What colour is the panel?", "target": {"answer": "orange"}},
        ],
    )
    assert out["step"] == 1
    groups = json.loads(next(r for r in emulator.emulator.requests if r.path.endswith("/train_step")).body_text)
    assert [g["mode"] for g in groups["groups"]] == ["sft", "sft"]


async def test_finetunes_are_listed_page_by_page_and_deleted(client: Client) -> None:
    ids = [(await call(client, "create_finetune", name=unique("page"), rank=8))["finetune_id"] for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await call(client, "list_finetunes", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [f["finetune_id"] for f in page["finetunes"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert set(ids) <= set(seen)
    assert (await call(client, "delete_finetune", finetune_id=ids[0]))["ok"] is True
    assert "404" in await refusal(client, "get_finetune", finetune_id=ids[0])


async def test_metrics_are_logged_against_a_step(client: Client) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    out = await call(
        client, "log_metrics", finetune_id=finetune["finetune_id"], step=0, metrics=[{"name": "acc", "value": 0.5}]
    )
    assert out["ok"] is True and out["logged_count"] == 1


async def test_the_same_rollout_set_twice_in_one_step_is_refused_before_sending(
    client: Client, photo: str, emulator
) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    group = {"rollout_set_id": batch["rollout_set_id"]}

    text = await refusal(client, "train_step", finetune_id=finetune["finetune_id"], groups=[group, group])

    assert text == (
        f"Error executing tool train_step: rollout set {batch['rollout_set_id']} is listed twice; a set trains once "
        "in a step"
    )
    assert not [r for r in emulator.emulator.requests if r.path.endswith("/train_step")]
    await call(client, "train_step", finetune_id=finetune["finetune_id"], groups=[group])  # left unclaimed


async def test_one_rollout_set_in_two_concurrent_steps_is_trained_on_once(client: Client, photo: str, emulator) -> None:
    finetune = await call(client, "create_finetune", name=unique(), rank=8)
    batch = await rollouts(client, finetune["finetune_id"], photo)
    groups = [{"rollout_set_id": batch["rollout_set_id"]}]
    emulator.emulator.inject_delay(1.0, path="/train_step")  # the first step is still on the wire...
    results = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:

            async def first() -> None:
                results.append(
                    await client.call_tool("train_step", {"finetune_id": finetune["finetune_id"], "groups": groups})
                )

            tasks.start_soon(first)
            # No event crosses from the emulator's thread: poll, bounded by fail_after.
            while not [r for r in emulator.emulator.requests if r.path.endswith("/train_step")]:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            # ...when the second asks for the same set, even allowing reuse.
            second = await refusal(
                client, "train_step", finetune_id=finetune["finetune_id"], groups=groups, allow_reuse=True
            )
    assert "is being trained on by another train_step call right now" in second
    [applied] = results
    assert not applied.is_error and applied.structured_content["step"] == 1
    assert [s.step for s in emulator.emulator.train_steps if s.finetune_id == finetune["finetune_id"]] == [1]
