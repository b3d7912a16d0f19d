"""Arguments that do not fit a tool's schema are refused in sentences the model can act on."""

from __future__ import annotations

import pytest
from mcp import Client

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import refusal

pytestmark = pytest.mark.anyio


def assert_plain(text: str, tool: str) -> None:
    """No pydantic report: no links, no type codes, no model names."""
    assert text.startswith(f"Error executing tool {tool}: invalid arguments: "), text
    assert text.endswith(f"Correct them and call {tool} again."), text
    for noise in ("http", "pydantic", "[type=", "input_type", "Arguments", "validation error"):
        assert noise not in text, text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_missing_argument_is_named(settings: Settings, mode: str) -> None:
    async with Client(build_server(settings), mode=mode) as client:
        text = await refusal(client, "detect", image="/tmp/x.png")
    assert_plain(text, "detect")
    assert "object is required" in text


async def test_each_wrong_value_is_said_with_what_was_given(client: Client) -> None:
    text = await refusal(client, "create_finetune", name="bad name!", rank=7)
    assert_plain(text, "create_finetune")
    assert "name must match pattern '^[A-Za-z0-9._-]+$' (got 'bad name!')" in text
    assert "rank must be 8, 16, 24 or 32 (got 7)" in text


async def test_a_long_value_is_never_repeated_back(client: Client) -> None:
    data_url = "data:image/png;base64," + "A" * 5000
    text = await refusal(client, "detect", image="/tmp/x.png", object="red", max_objects=data_url)
    assert_plain(text, "detect")
    assert "max_objects must be an integer" in text
    assert "AAAA" not in text


async def test_of_the_shapes_a_value_may_take_only_the_closest_is_discussed(client: Client) -> None:
    text = await refusal(client, "train_step", finetune_id="ft", groups=[{"rollout_set_id": 3, "rewards": "no"}])
    assert_plain(text, "train_step")
    assert "groups[0].rollout_set_id (as RLGroup) must be a string (got 3)" in text
    assert "groups[0].rewards (as RLGroup) must be a list (got 'no')" in text
    assert "SFTGroup" not in text and "skill" not in text


async def test_a_nested_list_item_is_located_by_its_index(client: Client) -> None:
    text = await refusal(client, "zoom", image="/tmp/x.png", boxes=[[0, 0, 1, 1], [0.1, 0.2, 0.3]])
    assert_plain(text, "zoom")
    assert "boxes[1] must have at least 4 items, not 3" in text


async def test_many_problems_are_listed_a_few_at_a_time(client: Client) -> None:
    text = await refusal(
        client,
        "start_training",
        dataset="/tmp/d.jsonl",
        steps=0,
        groups_per_step=0,
        rollouts_per_group=0,
        lr=0,
        temperature=9,
        eval_every=-1,
        save="some",
    )
    assert_plain(text, "start_training")
    assert text.count(";") == 4 and "(and 2 more)" in text
