"""The tuning API of the emulator over HTTP: finetunes, rollouts, train steps, checkpoints, and learning."""

from __future__ import annotations

import base64
import io
import json
import random
import re
from collections.abc import AsyncIterator
from statistics import mean
from typing import Any

import anyio
import httpx2
import pytest
from PIL import Image

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_emulator.ids import is_ulid, timestamp_ms
from moondream_emulator.model.vision import Box
from moondream_emulator.tuning.rewards import iou
from tests.support.pictures import Rect, canvas

pytestmark = pytest.mark.anyio

AUTH = {"X-Moondream-Auth": "md-tuning-test-key"}
ORANGE = (0.3, 0.25, 0.6, 0.7)
RED = (0.1, 0.1, 0.35, 0.4)
BOX_KEYS = ("x_min", "y_min", "x_max", "y_max")


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


ROOF = data_url(canvas((320, 240), [("orange", ORANGE)]))
BARN = data_url(canvas((320, 240), [("red", RED)]))


def box(rect: Rect) -> dict[str, float]:
    return dict(zip(BOX_KEYS, rect))


def as_box(value: dict[str, float]) -> Box:
    return Box(*(value[k] for k in BOX_KEYS))


def detect(image: str = ROOF, object: str = "orange panel", **settings: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"skill": "detect", "object": object, "image_url": image}
    if settings:
        request["settings"] = settings
    return request


class Api:
    """The emulator's HTTP API, in process."""

    def __init__(self, emulator: Emulator, http: httpx2.AsyncClient) -> None:
        self.emulator = emulator
        self.http = http

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> httpx2.Response:
        with anyio.fail_after(10):
            return await self.http.request(method, path, json=body, params=params or None)

    async def post_text(self, path: str, text: str) -> httpx2.Response:
        """POST a body written by hand, byte for byte."""
        with anyio.fail_after(10):
            return await self.http.post(path, content=text, headers={"Content-Type": "application/json"})

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = await self.call(method, path, body, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def finetune(self, name: str = "roofs", rank: int = 8) -> str:
        return (await self.ok("POST", "/tuning/finetunes", {"name": name, "rank": rank}))["finetune_id"]

    async def rollouts(
        self, finetune_id: str, request: dict[str, Any] | None = None, n: int = 4, **extra: Any
    ) -> httpx2.Response:
        body = {"finetune_id": finetune_id, "num_rollouts": n, "request": request or detect(), **extra}
        return await self.call("POST", "/tuning/rollouts", body)

    async def step(self, finetune_id: str, groups: list[Any], **extra: Any) -> httpx2.Response:
        return await self.call("POST", "/tuning/train_step", {"finetune_id": finetune_id, "groups": groups, **extra})

    async def rl_step(self, finetune_id: str) -> dict[str, Any]:
        batch = (await self.rollouts(finetune_id)).json()
        response = await self.step(finetune_id, [rl(batch, [0.5] * len(batch["rollouts"]))])
        assert response.status_code == 200, response.text
        return response.json()


def rl(batch: dict[str, Any], rewards: list[float] | None = None) -> dict[str, Any]:
    return {
        "mode": "rl",
        "request": batch["request"],
        "rollouts": batch["rollouts"],
        "rewards": batch["rewards"] if rewards is None else rewards,
    }


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    emulator = Emulator()
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://emulator/v1", headers=AUTH) as http:
        yield Api(emulator, http)


def refused(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


# --- finetunes ------------------------------------------------------------------------------------


async def test_finetune_ids_are_ulids_that_sort_by_creation(api: Api) -> None:
    ids = [await api.finetune(f"ft-{i}") for i in range(5)]
    assert all(is_ulid(i) and len(i) == 26 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 5
    created = (await api.ok("GET", f"/tuning/finetunes/{ids[0]}"))["finetune"]["created_at_ms"]
    assert timestamp_ms(ids[0]) == created


async def test_the_same_name_and_rank_is_the_same_finetune_and_another_rank_is_a_409(api: Api) -> None:
    first = await api.ok("POST", "/tuning/finetunes", {"name": "roofs", "rank": 16})
    again = await api.ok("POST", "/tuning/finetunes", {"name": "roofs", "rank": 16})
    assert first == again and set(first) == {"finetune_id"}
    error = refused(await api.call("POST", "/tuning/finetunes", {"name": "roofs", "rank": 8}), 409)
    assert "rank 16" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rank": 8}, "name"),
        ({"name": "", "rank": 8}, "name"),
        ({"name": "has space", "rank": 8}, "name"),
        ({"name": "slash/y", "rank": 8}, "name"),
        ({"name": "x" * 129, "rank": 8}, "name"),
        ({"name": "ok"}, "rank"),
        ({"name": "ok", "rank": 12}, "rank"),
        ({"name": "ok", "rank": "8"}, "rank"),
        ({"name": "ok", "rank": True}, "rank"),
    ],
)
async def test_names_and_ranks_outside_the_rules_are_refused(api: Api, body: dict, param: str) -> None:
    assert refused(await api.call("POST", "/tuning/finetunes", body), 400)["param"] == param


async def test_every_allowed_name_character_and_rank_is_accepted(api: Api) -> None:
    for rank in (8, 16, 24, 32):
        assert is_ulid(await api.finetune(f"A-z_0.9-{rank}" + "x" * 100, rank))


async def test_finetunes_are_listed_oldest_first_page_by_page(api: Api) -> None:
    ids = [await api.finetune(f"page-{i}") for i in range(5)]
    pages = []
    cursor = None
    while True:
        page = await api.ok("GET", "/tuning/finetunes", limit=2, **({"cursor": cursor} if cursor else {}))
        pages.append([f["finetune_id"] for f in page["finetunes"]])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == [ids[:2], ids[2:4], ids[4:]]
    listed = (await api.ok("GET", "/tuning/finetunes"))["finetunes"]
    assert set(listed[0]) == {"finetune_id", "name", "rank", "created_at_ms", "updated_at_ms"}
    assert [f["name"] for f in listed] == [f"page-{i}" for i in range(5)]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"cursor": "nope"}, {"cursor": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}],
)
async def test_bad_limits_and_cursors_are_refused(api: Api, params: dict) -> None:
    await api.finetune()
    assert refused(await api.call("GET", "/tuning/finetunes", **params), 400)["param"] in params


async def test_get_answers_the_finetune_wrapped_and_unknown_ids_are_404(api: Api) -> None:
    finetune_id = await api.finetune("roofs", 24)
    got = await api.ok("GET", f"/tuning/finetunes/{finetune_id}")
    assert set(got) == {"finetune"}
    assert {k: got["finetune"][k] for k in ("finetune_id", "name", "rank")} == {
        "finetune_id": finetune_id,
        "name": "roofs",
        "rank": 24,
    }
    assert refused(await api.call("GET", "/tuning/finetunes/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)["type"] == (
        "not_found_error"
    )


async def test_a_deleted_finetune_is_gone_everywhere_and_its_name_can_be_used_again(api: Api) -> None:
    finetune_id = await api.finetune("roofs")
    assert await api.ok("DELETE", f"/tuning/finetunes/{finetune_id}") == {"ok": True}
    refused(await api.call("GET", f"/tuning/finetunes/{finetune_id}"), 404)
    refused(await api.call("DELETE", f"/tuning/finetunes/{finetune_id}"), 404)
    refused(await api.rollouts(finetune_id), 404)
    refused(await api.step(finetune_id, [{"mode": "sft", "request": detect(), "target": {"boxes": []}}]), 404)
    assert (await api.ok("GET", "/tuning/finetunes"))["finetunes"] == []
    reborn = await api.finetune("roofs", 32)
    assert reborn != finetune_id


# --- rollouts -------------------------------------------------------------------------------------


async def test_rollouts_echo_the_request_as_received_and_each_carries_output_and_metadata(api: Api) -> None:
    finetune_id = await api.finetune()
    # Raw JSON text, braces and all: %-formatting keeps it readable.
    raw = (  # noqa: UP031
        '{"finetune_id": "%s", "num_rollouts": 3,\n "request": {"object": "orange", "skill": "detect", '
        '"image_url": "%s", "settings": {"temperature": 1.0, "max_objects": 5}}}'
    ) % (finetune_id, ROOF)
    response = await api.post_text("/tuning/rollouts", raw)
    assert response.status_code == 200, response.text
    echoed = response.text[len('{"request":') :].split(',"rollouts":')[0]
    assert echoed == raw.split('"request": ')[1][:-1]
    body = response.json()
    assert set(body) == {"request", "rollouts", "rewards"} and body["rewards"] is None
    assert len(body["rollouts"]) == 3
    for rollout in body["rollouts"]:
        assert list(rollout)[:8] == [
            "skill",
            "output",
            "finish_reason",
            "answer_tokens",
            "thinking_tokens",
            "has_answer_separator",
            "coords",
            "sizes",
        ]
        assert rollout["skill"] == "detect" and rollout["finish_reason"] == "stop"
        (found,) = rollout["output"]["objects"]
        assert set(found) == set(BOX_KEYS) and all(0 <= v <= 1 for v in found.values())
        tokens = rollout["answer_tokens"] + rollout["thinking_tokens"]
        assert all(isinstance(t, int) and t >= 0 for t in tokens) and 10 <= len(tokens) <= 400
        assert all(0 <= c <= 1023 for c in rollout["coords"] + rollout["sizes"])
    assert len({json.dumps(r) for r in body["rollouts"]}) == 3


async def test_rollout_metadata_has_numbers_that_reserializing_json_would_rewrite(api: Api) -> None:
    response = await api.rollouts(await api.finetune(), n=2)
    text = response.text
    assert json.dumps(response.json(), separators=(",", ":")) != text
    assert re.search(r'"temperature":1\.000\b', text) and re.search(r"-\d\.\d{3}e-0\d", text)


async def test_query_rollouts_answer_and_reason_when_asked(api: Api) -> None:
    request = {"skill": "query", "question": "How many red shapes?", "image_url": BARN, "reasoning": True}
    body = (await api.rollouts(await api.finetune(), request, n=2)).json()
    for rollout in body["rollouts"]:
        assert rollout["output"]["answer"] == "1"
        assert "one red shape" in rollout["output"]["reasoning"]["text"]
        assert rollout["has_answer_separator"] is True
    text_only = {"skill": "query", "question": "What is a barn?"}
    (rollout,) = (await api.rollouts(await api.finetune("text"), text_only, n=1)).json()["rollouts"]
    assert rollout["output"] == {"answer": "I need an image to answer that."}


async def test_point_rollouts_place_points_and_max_tokens_cuts_them_short(api: Api) -> None:
    finetune_id = await api.finetune()
    request = {"skill": "point", "object": "red", "image_url": BARN, "settings": {"temperature": 0}}
    (rollout,) = (await api.rollouts(finetune_id, request, n=1)).json()["rollouts"]
    ((x, y),) = [(p["x"], p["y"]) for p in rollout["output"]["points"]]
    assert (x, y) == pytest.approx((0.225, 0.25), abs=0.01)
    request["settings"]["max_tokens"] = 2
    (rollout,) = (await api.rollouts(finetune_id, request, n=1)).json()["rollouts"]
    assert rollout["output"] == {"points": []} and rollout["finish_reason"] == "length"


@pytest.mark.parametrize("n", [0, 17, 2.5, "4", None])
async def test_num_rollouts_must_be_1_to_16(api: Api, n: Any) -> None:
    assert refused(await api.rollouts(await api.finetune(), n=n), 400)["param"] == "num_rollouts"


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"skill": "detect", "image_url": ROOF}, "request.object"),
        ({"skill": "point", "object": "orange"}, "request.image_url"),
        (detect(image="data:image/png;base64,aGVsbG8="), "request.image_url"),
        ({"skill": "detect", "object": "x", "image_url": "https://example.com/a.png"}, "request.image_url"),
        ({"skill": "query"}, "request.question"),
        ({"skill": "caption", "image_url": ROOF}, "request.skill"),
        ({"object": "x", "image_url": ROOF}, "request.skill"),
        (detect(temperature=-1), "request.settings.temperature"),
        (detect(top_p=0), "request.settings.top_p"),
        ("detect", "request"),
    ],
)
async def test_rollout_requests_are_checked_like_skill_requests(api: Api, request_: Any, param: str) -> None:
    finetune_id = await api.finetune()
    body = {"finetune_id": finetune_id, "num_rollouts": 2, "request": request_}
    assert refused(await api.call("POST", "/tuning/rollouts", body), 400)["param"] == param


async def test_rollouts_for_an_unknown_finetune_are_404(api: Api) -> None:
    error = refused(await api.rollouts("01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)
    assert error["code"] == "finetune_not_found"


@pytest.mark.parametrize(
    ("request_", "truth"),
    [
        ({"skill": "query", "question": "How many?", "image_url": ROOF}, {"boxes": []}),
        (detect(), {"points": [{"x": 0.5, "y": 0.5}]}),
        (detect(), {"boxes": [box(ORANGE)], "points": []}),
        (detect(), {"boxes": [{"x_min": 0.5, "y_min": 0.1, "x_max": 0.4, "y_max": 0.2}]}),
        ({"skill": "point", "object": "orange", "image_url": ROOF}, {}),
        (
            {"skill": "point", "object": "orange", "image_url": ROOF},
            {"points": [{"x": 0.5, "y": 0.5}], "boxes": [box(ORANGE)]},
        ),
        ({"skill": "point", "object": "orange", "image_url": ROOF}, {"points": [{"x": 1.5, "y": 0.5}]}),
        (detect(), [box(ORANGE)]),
    ],
)
async def test_ground_truth_must_fit_the_skill(api: Api, request_: dict, truth: Any) -> None:
    response = await api.rollouts(await api.finetune(), request_, ground_truth=truth)
    assert refused(response, 400)["param"].startswith("ground_truth")


async def test_ground_truth_rewards_are_one_for_a_perfect_answer_and_low_for_a_wrong_one(api: Api) -> None:
    finetune_id = await api.finetune()
    greedy = detect(BARN, "red", temperature=0)
    right = await api.rollouts(finetune_id, greedy, n=2, ground_truth={"boxes": [box(RED)]})
    assert right.json()["rewards"] == [pytest.approx(1, abs=0.03)] * 2
    wrong = await api.rollouts(finetune_id, greedy, n=2, ground_truth={"boxes": [box((0.6, 0.6, 0.9, 0.9))]})
    assert wrong.json()["rewards"] == [0, 0]
    two = {"boxes": [box(RED), box((0.6, 0.6, 0.9, 0.9))]}
    extra = await api.rollouts(finetune_id, greedy, n=1, ground_truth=two)
    assert extra.json()["rewards"] == [pytest.approx(0.5, abs=0.02)]
    nothing = await api.rollouts(finetune_id, detect(BARN, "green"), n=1, ground_truth={"boxes": []})
    assert nothing.json()["rewards"] == [1]

    point = {"skill": "point", "object": "red", "image_url": BARN, "settings": {"temperature": 0}}
    centre = {"points": [{"x": 0.225, "y": 0.25}]}
    assert (await api.rollouts(finetune_id, point, n=1, ground_truth=centre)).json()["rewards"] == [
        pytest.approx(1, abs=0.1)
    ]
    near = {"points": [{"x": 0.225 + 0.05, "y": 0.25}]}
    assert (await api.rollouts(finetune_id, point, n=1, ground_truth=near)).json()["rewards"] == [
        pytest.approx(0.5, abs=0.1)
    ]
    inside = {"boxes": [box(RED)]}
    assert (await api.rollouts(finetune_id, point, n=1, ground_truth=inside)).json()["rewards"] == [1]
    outside = {"boxes": [box((0.6, 0.6, 0.9, 0.9))]}
    assert (await api.rollouts(finetune_id, point, n=1, ground_truth=outside)).json()["rewards"] == [0]


async def test_sampled_rollouts_differ_and_temperature_zero_gives_one_best_guess(api: Api) -> None:
    finetune_id = await api.finetune()
    sampled = (await api.rollouts(finetune_id, detect(), n=4)).json()["rollouts"]
    assert len({json.dumps(r["output"]) for r in sampled}) == 4
    greedy = (await api.rollouts(finetune_id, detect(temperature=0), n=4)).json()["rollouts"]
    assert len({json.dumps(r["output"]) for r in greedy}) == 1
    assert len({json.dumps(r) for r in greedy}) == 4  # the salt in the metadata still differs
    base = (await api.ok("POST", "/detect", {"image_url": ROOF, "object": "orange"}))["objects"]
    assert greedy[0]["output"]["objects"] == base


# --- train steps ----------------------------------------------------------------------------------


async def test_each_step_advances_the_counter_and_reports_training_numbers(api: Api) -> None:
    finetune_id = await api.finetune()
    batch = (await api.rollouts(finetune_id, ground_truth={"boxes": [box(ORANGE)]})).json()
    first = (await api.step(finetune_id, [rl(batch)])).json()
    assert first["step"] == 1 and first["applied"] is True
    assert set(first) == {
        "step",
        "applied",
        "kl",
        "router_kl",
        "grad_norm",
        "reward_mean",
        "reward_std",
        "sft_loss",
        "tokens_processed",
    }
    assert first["reward_mean"] == pytest.approx(mean(batch["rewards"]), abs=1e-5)
    assert first["sft_loss"] is None and first["kl"] >= 0 and first["grad_norm"] > 0
    second = (await api.step(finetune_id, [rl(batch)], lr=1e-3)).json()
    assert second["step"] == 2
    assert [(s.finetune_id, s.step) for s in api.emulator.train_steps] == [(finetune_id, 1), (finetune_id, 2)]
    assert api.emulator.train_steps[0].groups == [rl(batch)]


def moved_box(rollout: dict) -> dict:
    (found,) = rollout["output"]["objects"]
    return rollout | {"output": {"objects": [found | {"x_min": 0.0}]}}


@pytest.mark.parametrize(
    "tamper",
    [
        moved_box,
        lambda r: r | {"answer_tokens": [*r["answer_tokens"], 7]},
        lambda r: r | {"sizes": [1, 2]},
        lambda r: r | {"coords": [float(c) for c in r["coords"]]},  # 417 -> 417.0 is a change too
        lambda r: dict(reversed(list(r.items()))),  # the same members in another order
        lambda r: {k: v for k, v in r.items() if k != "logprobs"},
    ],
)
async def test_a_modified_rollout_is_refused_and_no_step_is_applied(api: Api, tamper: Any) -> None:
    finetune_id = await api.finetune()
    batch = (await api.rollouts(finetune_id)).json()
    rollouts = batch["rollouts"]
    tampered = batch | {"rollouts": [*rollouts[:2], tamper(rollouts[2]), rollouts[3]]}
    error = refused(await api.step(finetune_id, [rl(tampered, [1, 0, 1, 0])]), 400)
    assert "rollout 2 was modified" in error["message"] and error["code"] == "rollout_modified"
    assert api.emulator.train_steps == []
    assert (await api.step(finetune_id, [rl(batch, [1, 0, 1, 0])])).json()["step"] == 1


async def test_rollouts_go_back_only_to_their_finetune_with_their_request(api: Api) -> None:
    mine, other = await api.finetune("mine"), await api.finetune("other")
    batch = (await api.rollouts(mine)).json()
    assert "was modified" in refused(await api.step(other, [rl(batch, [0, 1, 0, 1])]), 400)["message"]
    moved = rl(batch, [0, 1, 0, 1]) | {"request": detect(object="orange roof")}
    assert refused(await api.step(mine, [moved]), 400)["code"] == "request_mismatch"
    assert api.emulator.train_steps == []


@pytest.mark.parametrize("rewards", [[1.0], [1, 2, 3, 4, 5], [], [1, 2, "3", 4], [1, 2, True, 4], None])
async def test_there_must_be_one_numeric_reward_per_rollout(api: Api, rewards: Any) -> None:
    finetune_id = await api.finetune()
    batch = (await api.rollouts(finetune_id)).json()
    error = refused(await api.step(finetune_id, [rl(batch) | {"rewards": rewards}]), 400)
    assert error["param"] == "groups[0].rewards"
    if isinstance(rewards, list) and all(type(r) in (int, float) for r in rewards):
        assert f"4 rollouts but {len(rewards)} rewards" in error["message"]


async def test_an_rl_group_without_mode_is_accepted_as_older_docs_show_it(api: Api) -> None:
    finetune_id = await api.finetune()
    batch = (await api.rollouts(finetune_id)).json()
    group = {k: v for k, v in rl(batch, [0.1, 0.2, 0.3, 0.4]).items() if k != "mode"}
    assert (await api.step(finetune_id, [group])).json()["step"] == 1


@pytest.mark.parametrize(
    ("request_", "target", "ok"),
    [
        ({"skill": "query", "question": "Colour?", "image_url": ROOF}, {"answer": "orange"}, True),
        ({"skill": "query", "question": "Colour?"}, {"answer": "orange"}, True),
        (
            {"skill": "query", "question": "Colour?", "reasoning": True},
            {"answer": "orange", "reasoning": {"text": "It is orange."}},
            True,
        ),
        (
            {"skill": "query", "question": "Colour?", "reasoning": True},
            {
                "answer": "orange",
                "reasoning": {
                    "text": "The roof is orange.",
                    "grounding": [{"start_idx": 4, "end_idx": 8, "points": [[0.45, 0.5]]}],
                },
            },
            True,
        ),
        (
            {"skill": "query", "question": "Colour?", "reasoning": True},
            {
                "answer": "orange",
                "reasoning": {"text": "Hm.", "grounding": [{"start_idx": 0, "end_idx": 9, "points": []}]},
            },
            False,
        ),
        ({"skill": "query", "question": "Colour?", "reasoning": True}, {"answer": "orange"}, False),
        ({"skill": "query", "question": "Colour?"}, {"answer": "orange", "reasoning": {"text": "hm"}}, False),
        (
            {"skill": "query", "question": "Colour?", "reasoning": True},
            {"answer": "orange", "reasoning": "It is orange."},
            False,
        ),
        ({"skill": "query", "question": "Colour?"}, {"answer": ""}, False),
        ({"skill": "point", "object": "orange", "image_url": ROOF}, {"points": [{"x": 0.4, "y": 0.5}]}, True),
        ({"skill": "point", "object": "orange", "image_url": ROOF}, {"boxes": [box(ORANGE)]}, True),
        (
            {"skill": "point", "object": "orange", "image_url": ROOF},
            {"points": [{"x": 0.4, "y": 0.5}], "boxes": [box(ORANGE)]},
            False,
        ),
        ({"skill": "point", "object": "orange", "image_url": ROOF}, {}, False),
        (detect(), {"boxes": [box(ORANGE)]}, True),
        (detect(), {"boxes": []}, True),
        (detect(), {"points": [{"x": 0.4, "y": 0.5}]}, False),
        (detect(), {"boxes": [box(ORANGE)], "answer": "orange"}, False),
        (detect(), {"boxes": [{"x_min": 0.2}]}, False),
        (detect(image="data:image/png;base64,aGVsbG8="), {"boxes": []}, False),
        ({"skill": "detect", "image_url": ROOF}, {"boxes": []}, False),
    ],
)
async def test_sft_targets_follow_the_skill_rules(api: Api, request_: dict, target: dict, ok: bool) -> None:
    finetune_id = await api.finetune()
    response = await api.step(finetune_id, [{"mode": "sft", "request": request_, "target": target}])
    if ok:
        assert response.status_code == 200, response.text
        assert response.json()["sft_loss"] > 0 and response.json()["reward_mean"] is None
    else:
        assert refused(response, 400)["param"].startswith("groups[0].")
        assert api.emulator.train_steps == []


async def test_one_step_may_mix_skills_and_modes(api: Api) -> None:
    finetune_id = await api.finetune()
    batch = (await api.rollouts(finetune_id)).json()
    query = {"skill": "query", "question": "How many orange shapes?", "image_url": ROOF}
    answers = (await api.rollouts(finetune_id, query, n=2)).json()
    out = (
        await api.step(
            finetune_id,
            [
                rl(batch, [0.9, 0.1, 0.5, 0.5]),
                {"mode": "sft", "request": query, "target": {"answer": "1"}},
                rl(answers, [1, 0]),
            ],
        )
    ).json()
    assert out["step"] == 1 and out["sft_loss"] is not None
    assert out["reward_mean"] == pytest.approx(mean([0.9, 0.1, 0.5, 0.5, 1, 0]))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"groups": []}, "groups"),
        ({}, "groups"),
        ({"groups": [{"request": detect(), "target": {"boxes": []}}]}, "groups[0].mode"),
        ({"groups": [{"mode": "ppo"}]}, "groups[0].mode"),
        ({"groups": [{"mode": "sft", "request": detect(), "target": {"boxes": []}}], "lr": 0}, "lr"),
        ({"groups": [{"mode": "sft", "request": detect(), "target": {"boxes": []}}], "lr": "fast"}, "lr"),
    ],
)
async def test_train_step_refuses_empty_groups_unknown_modes_and_bad_learning_rates(
    api: Api, body: dict, param: str
) -> None:
    finetune_id = await api.finetune()
    response = await api.call("POST", "/tuning/train_step", {"finetune_id": finetune_id, **body})
    assert refused(response, 400)["param"] == param


# --- checkpoints ----------------------------------------------------------------------------------


async def test_saving_makes_the_current_step_a_checkpoint_and_saving_again_changes_nothing(api: Api) -> None:
    finetune_id = await api.finetune()
    error = refused(await api.call("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save"), 404)
    assert "not been trained" in error["message"]
    await api.rl_step(finetune_id)
    await api.rl_step(finetune_id)
    saved = await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
    assert saved["ok"] is True
    checkpoint = saved["checkpoint"]
    assert set(checkpoint) == {
        "checkpoint_id",
        "finetune_id",
        "step",
        "created_at_ms",
        "updated_at_ms",
        "expires_at_ms",
    }
    assert checkpoint["expires_at_ms"] is None
    assert (checkpoint["finetune_id"], checkpoint["step"]) == (finetune_id, 2)
    assert is_ulid(checkpoint["checkpoint_id"])
    assert await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save") == saved
    listed = await api.ok("GET", f"/tuning/finetunes/{finetune_id}/checkpoints")
    assert listed == {"checkpoints": [checkpoint], "next_cursor": None, "has_more": False}


async def test_checkpoints_are_listed_saved_only_by_ascending_step_page_by_page(api: Api) -> None:
    finetune_id = await api.finetune()
    steps = []
    for step in range(1, 6):
        await api.rl_step(finetune_id)
        if step != 3:  # step 3 stays an implicit, unsaved checkpoint
            await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
            steps.append(step)
    path = f"/tuning/finetunes/{finetune_id}/checkpoints"
    first = await api.ok("GET", path, limit=3)
    assert [c["step"] for c in first["checkpoints"]] == [1, 2, 4] and first["has_more"] is True
    second = await api.ok("GET", path, limit=3, cursor=first["next_cursor"])
    assert [c["step"] for c in second["checkpoints"]] == [5] and second["has_more"] is False
    refused(await api.call("GET", path, limit=200), 400)
    refused(await api.call("GET", path, cursor="not-a-checkpoint"), 400)
    refused(await api.call("GET", "/tuning/finetunes/01ARZ3NDEKTSV4RRFFQ69G5FAV/checkpoints"), 404)


async def test_deleting_a_checkpoint_twice_is_410_and_one_never_saved_is_404(api: Api) -> None:
    finetune_id = await api.finetune()
    await api.rl_step(finetune_id)
    await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
    await api.rl_step(finetune_id)
    path = f"/tuning/finetunes/{finetune_id}/checkpoints"
    refused(await api.call("DELETE", f"{path}/2"), 404)  # an implicit checkpoint: never saved
    refused(await api.call("DELETE", f"{path}/7"), 404)
    refused(await api.call("DELETE", f"{path}/one"), 400)
    assert await api.ok("DELETE", f"{path}/1") == {"ok": True}
    assert refused(await api.call("DELETE", f"{path}/1"), 410)["code"] == "checkpoint_deleted"
    assert (await api.ok("GET", path))["checkpoints"] == []
    # An older checkpoint is not what training resumes from: training goes on.
    assert (await api.rl_step(finetune_id))["step"] == 3


async def test_deleting_the_latest_checkpoint_blocks_further_training(api: Api) -> None:
    finetune_id = await api.finetune()
    await api.rl_step(finetune_id)
    await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
    batch = (await api.rollouts(finetune_id)).json()
    await api.ok("DELETE", f"/tuning/finetunes/{finetune_id}/checkpoints/1")
    error = refused(await api.step(finetune_id, [rl(batch, [1, 0, 0, 0])]), 409)
    assert "latest checkpoint (step 1)" in error["message"] and "deleted" in error["message"]
    refused(await api.call("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save"), 410)
    assert len(api.emulator.train_steps) == 1


async def test_skills_answer_with_a_saved_checkpoint_and_404_for_any_other(api: Api) -> None:
    finetune_id = await api.finetune()
    model = f"moondream3-preview/{finetune_id}@1"
    request = {"image_url": BARN, "object": "red", "model": model}
    refused(await api.call("POST", "/detect", request), 404)  # no step yet
    await api.rl_step(finetune_id)
    refused(await api.call("POST", "/detect", request), 404)  # step 1 is not saved
    await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
    for path, body in [
        ("/detect", request),
        ("/point", request),
        ("/query", {"image_url": BARN, "question": "How many red shapes?", "model": model}),
        ("/caption", {"image_url": BARN, "model": model}),
    ]:
        assert (await api.call("POST", path, body)).status_code == 200, path
    (found,) = (await api.ok("POST", "/detect", request))["objects"]
    assert found == pytest.approx(box(RED), abs=0.01)
    unsaved = request | {"model": f"moondream3-preview/{finetune_id}@2"}
    refused(await api.call("POST", "/detect", unsaved), 404)
    await api.ok("DELETE", f"/tuning/finetunes/{finetune_id}/checkpoints/1")
    assert refused(await api.call("POST", "/detect", request), 404)["param"] == "model"


async def test_a_deleted_finetunes_checkpoints_are_no_model(api: Api) -> None:
    finetune_id = await api.finetune()
    await api.rl_step(finetune_id)
    await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save")
    await api.ok("DELETE", f"/tuning/finetunes/{finetune_id}")
    request = {"image_url": BARN, "object": "red", "model": f"moondream3-preview/{finetune_id}@1"}
    refused(await api.call("POST", "/detect", request), 404)


# --- metrics --------------------------------------------------------------------------------------


async def test_metrics_are_logged_against_a_step(api: Api) -> None:
    finetune_id = await api.finetune()
    out = await api.ok(
        "POST", f"/tuning/finetunes/{finetune_id}/metrics", {"step": 3, "metrics": {"eval_iou": 0.71, "accuracy": 1}}
    )
    assert out == {"ok": True, "step": 3, "logged_count": 2}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"metrics": {"iou": 0.5}}, 400),
        ({"step": -1, "metrics": {"iou": 0.5}}, 400),
        ({"step": 1, "metrics": {"iou": "high"}}, 400),
        ({"step": 1, "metrics": {"iou": True}}, 400),
        ({"step": 1, "metrics": {}}, 400),
        ({"step": 1}, 400),
    ],
)
async def test_metrics_must_be_numbers_against_a_step(api: Api, body: dict, status: int) -> None:
    finetune_id = await api.finetune()
    refused(await api.call("POST", f"/tuning/finetunes/{finetune_id}/metrics", body), status)


async def test_metrics_for_an_unknown_finetune_are_404(api: Api) -> None:
    path = "/tuning/finetunes/01ARZ3NDEKTSV4RRFFQ69G5FAV/metrics"
    refused(await api.call("POST", path, {"step": 1, "metrics": {"iou": 0.5}}), 404)


# --- the gate, the log and delays -----------------------------------------------------------------


async def test_tuning_passes_the_same_gate_as_the_skills(api: Api) -> None:
    refused(await api.http.get("/tuning/finetunes", headers={"X-Moondream-Auth": ""}), 401)
    api.emulator.inject(503, path="/tuning/finetunes")
    refused(await api.call("POST", "/tuning/finetunes", {"name": "x", "rank": 8}), 503)
    assert [(r.path, r.status) for r in api.emulator.requests] == [
        ("/v1/tuning/finetunes", 401),
        ("/v1/tuning/finetunes", 503),
    ]


async def test_moondream_station_has_no_tuning_api() -> None:
    emulator = Emulator(EmulatorConfig(no_auth=True))
    transport = httpx2.ASGITransport(app=emulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://e/v1") as http:
        response = await http.get("/tuning/finetunes")
    assert response.status_code == 404 and set(response.json()) == {"error"}


async def test_the_log_keeps_the_body_and_the_answer_as_text_but_not_a_streams(api: Api) -> None:
    raw = '{"name": "roofs",   "rank": 8}'
    answer = await api.post_text("/tuning/finetunes", raw)
    await api.http.post("/caption", json={"image_url": BARN, "stream": True})
    made, streamed = api.emulator.requests
    assert made.body_text == raw and made.json == {"name": "roofs", "rank": 8}
    assert made.response_text == answer.text
    assert streamed.response_text is None and streamed.status == 200


async def test_a_delayed_train_step_is_applied_although_the_client_gave_up_waiting() -> None:
    with running_emulator(Emulator()) as running:
        async with httpx2.AsyncClient(base_url=running.url, headers=AUTH) as http:
            api = Api(running.emulator, http)
            finetune_id = await api.finetune()
            batch = (await api.rollouts(finetune_id)).json()
            running.emulator.inject_delay(1.0, path="/train_step")
            with pytest.raises(httpx2.ReadTimeout):
                await http.post(
                    "/tuning/train_step",
                    timeout=0.3,
                    json={"finetune_id": finetune_id, "groups": [rl(batch, [1, 0, 0, 0])]},
                )
            (applied,) = running.emulator.train_steps
            assert (applied.finetune_id, applied.step) == (finetune_id, 1)
            # The fault is used up: the same rollouts go again, at once, as step 2.
            assert (await api.step(finetune_id, [rl(batch, [1, 0, 0, 0])])).json()["step"] == 2
            assert [s.step for s in running.emulator.train_steps] == [1, 2]


async def test_a_delay_set_through_the_control_endpoint_holds_back_only_its_path(api: Api) -> None:
    fault = {"delay": 0.3, "path": "/tuning/finetunes"}
    assert (await api.http.post("http://emulator/_emulator/faults", json=fault)).json() == {"ok": True}
    with anyio.fail_after(5):
        started = anyio.current_time()
        await api.finetune()
        assert anyio.current_time() - started >= 0.3
        started = anyio.current_time()
        await api.finetune("other")
        assert anyio.current_time() - started < 0.3


# --- learning -------------------------------------------------------------------------------------

TRUTH = {"boxes": [box(ORANGE)]}


async def reward_curve(api: Api, name: str, steps: int = 12, *, shuffle: bool = False) -> list[float]:
    """Mean ground-truth reward per step of RL on the orange roof; rewards shuffled within each group
    when `shuffle`, so they say nothing about which rollout was better."""
    finetune_id = await api.finetune(name)
    shuffler = random.Random(7)
    means = []
    for _ in range(steps):
        batch = (await api.rollouts(finetune_id, n=8, ground_truth=TRUTH)).json()
        means.append(mean(batch["rewards"]))
        rewards = shuffler.sample(batch["rewards"], len(batch["rewards"])) if shuffle else batch["rewards"]
        out = await api.step(finetune_id, [rl(batch, rewards)])
        assert out.status_code == 200, out.text
    return means


async def test_rl_with_ground_truth_rewards_raises_the_mean_reward(api: Api) -> None:
    means = await reward_curve(api, "truthful")
    assert mean(means[-3:]) > mean(means[:3]) + 0.1, means


async def test_rl_with_shuffled_rewards_does_not_raise_it() -> None:
    curves = []
    for shuffle in (False, True):  # one emulator each: the same name is the same seed
        emulator = Emulator()
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=emulator.app), base_url="http://emulator/v1", headers=AUTH
        ) as http:
            curves.append(await reward_curve(Api(emulator, http), "same-seed", shuffle=shuffle))
    truthful, shuffled = curves
    assert truthful[0] == shuffled[0]  # the same start
    gain = mean(shuffled[-3:]) - mean(shuffled[:3])
    assert gain < 0.05, shuffled
    assert mean(truthful[-3:]) - mean(truthful[:3]) > gain + 0.1, (truthful, shuffled)


async def test_a_trained_checkpoint_detects_a_hard_colour_better_than_the_base_model(api: Api) -> None:
    base = (await api.ok("POST", "/detect", {"image_url": ROOF, "object": "orange"}))["objects"]
    await reward_curve(api, "evaluated", steps=10)
    finetune_id = (await api.ok("GET", "/tuning/finetunes"))["finetunes"][0]["finetune_id"]
    model = (await api.ok("POST", f"/tuning/finetunes/{finetune_id}/checkpoints/save"))["checkpoint"]
    tuned = await api.ok(
        "POST",
        "/detect",
        {"image_url": ROOF, "object": "orange", "model": f"moondream3-preview/{finetune_id}@{model['step']}"},
    )
    truth = Box(*ORANGE)
    base_iou, tuned_iou = iou(as_box(base[0]), truth), iou(as_box(tuned["objects"][0]), truth)
    assert base_iou < 0.8 and tuned_iou > base_iou + 0.1, (base_iou, tuned_iou)
    # Evaluation rollouts at temperature 0 are the same best guess.
    (greedy,) = (await api.rollouts(finetune_id, detect(temperature=0), n=1)).json()["rollouts"]
    assert greedy["output"]["objects"] == tuned["objects"]


async def test_the_base_model_is_exact_on_easy_colours_and_off_on_hard_ones(api: Api) -> None:
    both = data_url(canvas((400, 300), [("red", RED), ("orange", ORANGE)]))
    (red,) = (await api.ok("POST", "/detect", {"image_url": both, "object": "red"}))["objects"]
    (orange,) = (await api.ok("POST", "/detect", {"image_url": both, "object": "orange"}))["objects"]
    assert red == pytest.approx(box(RED), abs=0.01)
    shift = [orange[k] - v for k, v in box(ORANGE).items()]
    assert shift[0] == pytest.approx(shift[2], abs=0.01) and shift[1] == pytest.approx(shift[3], abs=0.01)
    assert 0.06 <= (shift[0] ** 2 + shift[1] ** 2) ** 0.5 <= 0.09
    again = (await api.ok("POST", "/detect", {"image_url": both, "object": "orange"}))["objects"]
    assert again == [orange]


async def test_the_base_model_mistakes_hard_colours_in_some_answers_and_never_easy_ones(api: Api) -> None:
    questions = [f"Question {i}: how many orange shapes are there?" for i in range(40)]

    async def answer(image: str, question: str) -> str:
        return (await api.ok("POST", "/query", {"image_url": image, "question": question}))["answer"]

    answers = [await answer(ROOF, q) for q in questions]
    assert set(answers) == {"0", "1"} and 8 <= answers.count("0") <= 32
    assert {await answer(BARN, q.replace("orange", "red")) for q in questions} == {"1"}
