"""NaN, Infinity and 1e309 (read as infinity) in any argument of any tool: a clean error naming it, never a
crash. Sent as raw JSON-RPC text over stdio, since no well-behaved client can send them at all."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from moondream_emulator import RunningEmulator
from moondream_mcp.tools.arguments import non_finite
from tests.support.stdio import StdioPeer, server_env


@pytest.fixture(scope="module")
def peer(_shared_emulator: RunningEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdioPeer]:
    tmp = tmp_path_factory.mktemp("arguments")
    running = StdioPeer(server_env(_shared_emulator, tmp, tmp))
    yield running
    running.close()


def call(tool: str, arguments: str) -> bytes:
    head = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call"})[:-1]
    return f'{head}, "params": {{"name": "{tool}", "arguments": {arguments}}}}}'.encode()


@pytest.mark.parametrize(
    ("tool", "arguments", "where", "shown"),
    [
        ("detect", '{"image":"/x.png","object":"cat","temperature":NaN}', "temperature", "NaN"),
        (
            "segment",
            '{"image":"/x.png","object":"cat","spatial_refs":[[0.5,Infinity]]}',
            "spatial_refs[0][1]",
            "Infinity",
        ),
        (
            "log_metrics",
            '{"finetune_id":"ft","step":1,"metrics":[{"name":"ok","value":1},{"name":"loss","value":NaN}]}',
            "metrics[1].value",
            "NaN",
        ),
        (
            "train_step",
            '{"finetune_id":"ft","groups":[{"rollout_set_id":"r","rewards":[1.0,-Infinity]}]}',
            "groups[0].rewards[1]",
            "-Infinity",
        ),
        ("batch", '{"skill":"caption","images":["/x.png"],"max_tokens":1e309}', "max_tokens", "Infinity"),
    ],
)
def test_a_non_finite_number_anywhere_gets_a_clean_error_naming_it(
    peer: StdioPeer, emulator: RunningEmulator, tool: str, arguments: str, where: str, shown: str
) -> None:
    answer = peer.answer(call(tool, arguments))

    assert answer["result"] == {
        "content": [
            {
                "type": "text",
                "text": f"invalid argument {where}: {shown} is not a number a tool can take; give a finite number.",
            }
        ],
        "isError": True,
        "resultType": "complete",
    }
    assert emulator.emulator.requests == []  # refused before anything was sent


def test_the_largest_finite_numbers_pass() -> None:
    assert non_finite(json.loads('{"a": [1e308, -1e308, 0.0], "b": {"c": 5e-324}}')) is None
    assert non_finite(json.loads('{"a": [1, {"b": [NaN]}]}')) == ("a[1].b[0]", pytest.approx(float("nan"), nan_ok=True))
