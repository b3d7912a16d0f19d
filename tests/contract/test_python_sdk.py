"""The official Python SDK (moondream 2.6.1), unmodified, against the emulator: every cloud call it has and
every finetuning call. If one of these fails, the emulator does not speak the real protocol.

The SDK is synchronous (urllib): these tests are plain functions; the emulator serves from its own thread.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from tests.support.calls import unique
from tests.support.keys import API_KEY
from tests.support.pictures import assert_box, canvas

RED = (0.25, 0.2, 0.5, 0.6)
BLUE = (0.6, 0.55, 0.9, 0.9)
ORANGE = (0.3, 0.25, 0.6, 0.7)


def box(rect: tuple[float, float, float, float]) -> dict[str, float]:
    return dict(zip(("x_min", "y_min", "x_max", "y_max"), rect, strict=True))


@pytest.fixture
def picture() -> Image.Image:
    return canvas((400, 300), [("red", RED), ("blue", BLUE)])


@pytest.fixture
def vl(moondream_sdk: ModuleType, emulator) -> Any:
    return moondream_sdk.vl(api_key=API_KEY, endpoint=emulator.url)


def sent(emulator, path: str) -> dict[str, Any]:
    request = [r for r in emulator.emulator.requests if r.path == f"/v1{path}"][-1]
    assert request.status == 200, request.response_text
    return request.json or {}


def test_caption_plain_and_streamed(vl: Any, picture: Image.Image, emulator) -> None:
    plain = vl.caption(picture, length="short")["caption"]
    assert "red" in plain.lower() and "blue" in plain.lower()
    streamed = "".join(vl.caption(picture, length="short", stream=True)["caption"])
    assert streamed == plain
    assert sent(emulator, "/caption")["stream"] is True


def test_query_plain_streamed_with_reasoning_and_with_spatial_refs(vl: Any, picture: Image.Image, emulator) -> None:
    assert vl.query(picture, "How many red shapes are there?")["answer"] == "1"
    assert "".join(vl.query(picture, "What colours are there?", stream=True)["answer"]) == "Blue and red."
    reasoned = vl.query(picture, "How many blue shapes?", reasoning=True)
    assert reasoned["answer"] == "1"
    grounding = reasoned["reasoning"]["grounding"]
    spans = [reasoned["reasoning"]["text"][g["start_idx"] : g["end_idx"]] for g in grounding]
    assert spans == ["one blue shape", "one red shape"]
    assert grounding[0]["points"][0] == pytest.approx([0.75, 0.725], abs=0.02)
    # The SDK streams with reasoning on: the stream still carries the answer.
    assert "".join(vl.query(picture, "How many red shapes?", stream=True, reasoning=True)["answer"]) == "1"
    hinted = vl.query(picture, "How many blue shapes?", spatial_refs=[[0.75, 0.7]])
    assert hinted["answer"] == "1" and sent(emulator, "/query")["spatial_refs"] == [[0.75, 0.7]]
    assert vl.query(question="What is two plus two?")["answer"]


def test_detect_and_point_find_the_red_square(vl: Any, picture: Image.Image, emulator) -> None:
    (found,) = vl.detect(picture, "red square", settings={"max_objects": 5})["objects"]
    assert_box(found, RED)
    (point,) = vl.point(picture, "red square", spatial_refs=[[0.4, 0.4]])["points"]
    assert (point["x"], point["y"]) == pytest.approx((0.375, 0.4), abs=0.02)
    assert sent(emulator, "/point")["spatial_refs"] == [[0.4, 0.4]]


def test_segment_plain_and_streamed(vl: Any, picture: Image.Image) -> None:
    plain = vl.segment(picture, "blue", spatial_refs=[[0.75, 0.7]])
    assert_box(plain["bbox"], BLUE)
    assert plain["path"].startswith("M ")
    updates = list(vl.segment(picture, "blue", stream=True))
    assert_box(updates[0]["bbox"], BLUE)
    assert updates[-1]["completed"] is True and updates[-1]["path"] == plain["path"]
    assert any("chunk" in u for u in updates[1:-1])


def test_chat_plain_and_streamed_across_two_images(vl: Any, picture: Image.Image, moondream_sdk: ModuleType) -> None:
    other = canvas((200, 150), [("red", (0.1, 0.1, 0.4, 0.4)), ("red", (0.6, 0.6, 0.9, 0.9))])
    parts = [{"type": "image_url", "image_url": {"url": vl.encode_image(p).image_url}} for p in (picture, other)]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "How many red shapes in all?"}]}]
    answer = vl.chat(messages, settings={"temperature": 0, "max_tokens": 20}, reasoning=True)
    assert answer["message"]["content"] == "3" and answer["finish_reason"] == "stop"
    assert answer["message"]["reasoning"] and answer["message"]["reasoning_details"]["grounding"]
    assert "".join(vl.chat(messages, stream=True)["message"]) == "3"
    which = messages[:1] + [
        {"role": "assistant", "content": "3"},
        {"role": "user", "content": "Which image shows a blue shape?"},
    ]
    assert vl.chat(which)["message"]["content"] == "Image 1."


def test_every_finetuning_call(moondream_sdk: ModuleType, emulator) -> None:
    md = moondream_sdk
    endpoint = f"{emulator.url}/tuning"
    roof = canvas((320, 240), [("orange", ORANGE)])
    ft = md.ft(API_KEY, name=unique("sdk"), rank=8, endpoint=endpoint)
    assert md.ft(API_KEY, name=ft.name, rank=8, endpoint=endpoint).finetune_id == ft.finetune_id
    fetched = md.ft(API_KEY, finetune_id=ft.finetune_id, endpoint=endpoint)
    assert (fetched.name, fetched.rank) == (ft.name, 8)

    # RL with ground truth: the API rewards each rollout.
    truth = {"boxes": [box(ORANGE)]}
    detect = ft.rollouts("detect", image=roof, object="orange", num_rollouts=4, ground_truth=truth)
    assert len(detect["rollouts"]) == 4 and len(detect["rewards"]) == 4
    point = ft.rollouts(
        "point", image=roof, object="orange", num_rollouts=2, ground_truth={"points": [{"x": 0.45, "y": 0.475}]}
    )
    query = ft.rollouts(
        "query",
        image=roof,
        question="What colour is the roof?",
        num_rollouts=2,
        reasoning=True,
        spatial_refs=[[0.45, 0.475]],
        settings={"temperature": 1.0, "max_tokens": 64},
    )
    assert query["rewards"] is None and all(r["output"]["answer"] for r in query["rollouts"])
    groups = [
        {"mode": "rl", "request": detect["request"], "rollouts": detect["rollouts"], "rewards": detect["rewards"]},
        {"mode": "rl", "request": point["request"], "rollouts": point["rollouts"], "rewards": point["rewards"]},
        {"mode": "rl", "request": query["request"], "rollouts": query["rollouts"], "rewards": [1.0, 0.0]},
    ]
    step = ft.train_step(groups)
    assert (step["step"], step["applied"]) == (1, True) and step["reward_mean"] is not None
    body = json.loads([r for r in emulator.emulator.requests if r.path.endswith("/train_step")][-1].body_text)
    assert body["lr"] == 2e-4

    # SFT, every skill, a reasoning target with grounding included.
    sft = [
        {
            "mode": "sft",
            "request": {"skill": "query", "question": "What colour is the roof?", "image": roof, "reasoning": True},
            "target": {
                "answer": "orange",
                "reasoning": {
                    "text": "The roof is orange.",
                    "grounding": [{"start_idx": 4, "end_idx": 8, "points": [[0.45, 0.475]]}],
                },
            },
        },
        {
            "mode": "sft",
            "request": {"skill": "point", "object": "roof", "image": roof},
            "target": {"boxes": [box(ORANGE)]},
        },
        {
            "mode": "sft",
            "request": {"skill": "detect", "object": "roof", "image": roof},
            "target": {"boxes": [box(ORANGE)]},
        },
    ]
    step = ft.train_step(sft, lr=1e-4)
    assert step["step"] == 2 and step["sft_loss"] is not None

    logged = ft.log_metrics(2, {"eval_iou": 0.8})
    assert (logged["ok"], logged["step"], logged["logged_count"]) == (True, 2, 1)
    saved = ft.save_checkpoint()["checkpoint"]
    assert saved["step"] == 2 and "expires_at_ms" in saved
    listed = ft.list_checkpoints()
    assert [c["step"] for c in listed["checkpoints"]] == [2] and listed["has_more"] is False

    # The checkpoint answers the skills as a model; segment takes it too.
    tuned = md.vl(api_key=API_KEY, endpoint=emulator.url, model=ft.model(2))
    (found,) = tuned.detect(roof, "orange")["objects"]
    assert_box(found, ORANGE, tolerance=0.1)
    assert_box(tuned.segment(roof, "orange")["bbox"], ORANGE)
    assert sent(emulator, "/segment")["model"] == ft.model(2)

    page = ft._request_json("GET", "/finetunes", query={"limit": 100})  # the SDK has no list call of its own
    assert ft.finetune_id in [f["finetune_id"] for f in page["finetunes"]]
    ft.delete_checkpoint(2)
    assert ft.list_checkpoints()["checkpoints"] == []
    ft.delete()
    assert ft.finetune_id not in [
        f["finetune_id"] for f in ft._request_json("GET", "/finetunes", query={"limit": 100})["finetunes"]
    ]
