"""The emulator over real HTTP on 127.0.0.1: answers, errors, streams, Station's dialect and faults."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import time
from collections.abc import Iterator

import anyio
import httpx2
import pytest
from PIL import Image, ImageDraw

from moondream_emulator import (
    Emulator,
    EmulatorConfig,
    RunningEmulator,
    running_emulator,
)

pytestmark = pytest.mark.anyio

KEY = "md-emulator-test-key"
AUTH = {"X-Moondream-Auth": KEY}


@pytest.fixture(scope="module")
def _cloud() -> Iterator[RunningEmulator]:
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({KEY})))) as running:
        yield running


@pytest.fixture
def cloud(_cloud: RunningEmulator) -> Iterator[RunningEmulator]:
    """The cloud-like emulator, with no faults pending and an empty log."""
    _cloud.emulator.clear()
    yield _cloud
    _cloud.emulator.clear()


@pytest.fixture(scope="module")
def station() -> Iterator[RunningEmulator]:
    with running_emulator(Emulator(EmulatorConfig(no_auth=True))) as running:
        yield running


def picture(squares=(("red", (100, 60, 200, 180)),), size=(400, 300)) -> Image.Image:
    """White, with each (colour, pixel box [x0, y0, x1, y1)) filled in."""
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    for colour, (x0, y0, x1, y1) in squares:
        pen.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    return image


def data_url(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


RED_SQUARE = data_url(picture())  # red at (0.25, 0.2)-(0.5, 0.6)
TWO_RED_ONE_BLUE = data_url(
    picture([("red", (40, 30, 120, 90)), ("red", (200, 150, 280, 270)), ("blue", (300, 30, 380, 110))])
)


async def post(running: RunningEmulator, path: str, body: object, headers: dict[str, str] = AUTH) -> httpx2.Response:
    with anyio.fail_after(10):
        async with httpx2.AsyncClient(base_url=running.url, headers=headers) as http:
            if isinstance(body, bytes):
                return await http.post(path, content=body, headers={"Content-Type": "application/json"})
            return await http.post(path, json=body)


async def events(running: RunningEmulator, path: str, body: dict, headers: dict[str, str] = AUTH) -> list[dict]:
    """The events of a streamed answer, checking the framing: one `data:` line per event, nothing else."""
    response = await post(running, path, body, headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        assert block.startswith("data: ") and "\n" not in block, block
    return [json.loads(block[len("data: ") :]) for block in blocks[:-1]]


def nested_error(response: httpx2.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["code"] and error["type"]
    assert error["param"] == param
    return error


def path_points(path: str) -> list[tuple[float, float]]:
    assert re.fullmatch(r"M [\d. ]+( L [\d. ]+)+ Z", path), path
    numbers = [float(n) for n in re.findall(r"\d+\.\d+", path)]
    return list(zip(numbers[::2], numbers[1::2]))


# --- skills ---------------------------------------------------------------------------------------


async def test_detect_returns_the_box_of_each_red_square_largest_first(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/detect", {"image_url": TWO_RED_ONE_BLUE, "object": "red squares"})
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"].startswith("req_")
    boxes = [(o["x_min"], o["y_min"], o["x_max"], o["y_max"]) for o in body["objects"]]
    assert len(boxes) == 2
    assert boxes[0] == pytest.approx((0.5, 0.5, 0.7, 0.9), abs=0.01)
    assert boxes[1] == pytest.approx((0.1, 0.1, 0.3, 0.3), abs=0.01)


async def test_detect_finds_a_square_in_a_jpeg_to_within_a_hundredth(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/detect", {"image_url": data_url(picture(), "JPEG"), "object": "the Red box"})
    (box,) = response.json()["objects"]
    assert box == pytest.approx({"x_min": 0.25, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6}, abs=0.01)


async def test_max_objects_caps_the_number_of_boxes(cloud: RunningEmulator) -> None:
    body = {"image_url": TWO_RED_ONE_BLUE, "object": "red", "settings": {"max_objects": 1}}
    assert len((await post(cloud, "/detect", body)).json()["objects"]) == 1


async def test_an_object_that_names_no_colour_finds_nothing(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/detect", {"image_url": TWO_RED_ONE_BLUE, "object": "car"})
    assert response.json()["objects"] == []


async def test_point_returns_the_centre_of_each_red_square(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/point", {"image_url": TWO_RED_ONE_BLUE, "object": "red"})
    points = [(p["x"], p["y"]) for p in response.json()["points"]]
    assert points == [pytest.approx((0.6, 0.7), abs=0.01), pytest.approx((0.2, 0.2), abs=0.01)]


async def test_segment_path_is_relative_to_its_bbox_and_lies_on_the_square_edges(
    cloud: RunningEmulator,
) -> None:
    body = (await post(cloud, "/segment", {"image_url": RED_SQUARE, "object": "red"})).json()
    bbox = body["bbox"]
    assert bbox == pytest.approx({"x_min": 0.25, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6}, abs=0.01)
    local = path_points(body["path"])
    assert min(x for x, _ in local) == 0 and max(x for x, _ in local) == 1
    assert min(y for _, y in local) == 0 and max(y for _, y in local) == 1
    width, height = bbox["x_max"] - bbox["x_min"], bbox["y_max"] - bbox["y_min"]
    for u, v in local:
        x, y = bbox["x_min"] + u * width, bbox["y_min"] + v * height
        on_side = min(abs(x - 0.25), abs(x - 0.5)) <= 0.02 and 0.18 <= y <= 0.62
        on_top_or_bottom = min(abs(y - 0.2), abs(y - 0.6)) <= 0.02 and 0.23 <= x <= 0.52
        assert on_side or on_top_or_bottom, (x, y)


async def test_segment_of_a_triangle_has_a_triangular_outline(cloud: RunningEmulator) -> None:
    image = Image.new("RGB", (400, 400), "white")
    ImageDraw.Draw(image).polygon([(100, 50), (300, 250), (50, 250)], fill="purple")
    body = (await post(cloud, "/segment", {"image_url": data_url(image), "object": "purple"})).json()
    local = path_points(body["path"])
    assert 3 <= len(local) <= 6  # three corners, the acute ones possibly cut short
    # A triangle covers half of its bounding box.
    area = abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(local, local[1:] + local[:1]))) / 2
    assert area == pytest.approx(0.5, abs=0.05)


async def test_segment_with_nothing_found_has_an_empty_path_and_no_bbox(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/segment", {"image_url": RED_SQUARE, "object": "green"})
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "request_id"} == {"path": "", "bbox": None}


async def test_segment_spatial_refs_choose_the_region_they_point_into(cloud: RunningEmulator) -> None:
    body = {"image_url": TWO_RED_ONE_BLUE, "object": "red", "spatial_refs": [[0.2, 0.2]]}
    bbox = (await post(cloud, "/segment", body)).json()["bbox"]
    assert bbox == pytest.approx({"x_min": 0.1, "y_min": 0.1, "x_max": 0.3, "y_max": 0.3}, abs=0.01)


@pytest.mark.parametrize(
    ("length", "caption"),
    [
        ("short", "Two red shapes and one blue shape."),
        ("normal", "An image showing two red shapes and one blue shape on a white background."),
        (None, "An image showing two red shapes and one blue shape on a white background."),
    ],
)
async def test_captions_are_deterministic_sentences_about_the_shapes(
    cloud: RunningEmulator, length: str | None, caption: str
) -> None:
    request = {"image_url": TWO_RED_ONE_BLUE} | ({"length": length} if length else {})
    body = (await post(cloud, "/caption", request)).json()
    assert body["caption"] == caption
    assert body["finish_reason"] == "stop"
    assert set(body["metrics"]) == {
        "input_tokens",
        "output_tokens",
        "prefill_time_ms",
        "decode_time_ms",
        "ttft_ms",
    }


async def test_a_long_caption_says_where_each_shape_is(cloud: RunningEmulator) -> None:
    caption = (await post(cloud, "/caption", {"image_url": TWO_RED_ONE_BLUE, "length": "long"})).json()["caption"]
    assert "a red shape at the top left" in caption and "a blue shape at the top right" in caption


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("How many red squares are there?", "2"),
        ("how many BLUE things?", "1"),
        ("How many shapes?", "3"),
        ("How many green squares?", "0"),
        ("What colours are there?", "Red and blue."),
        ("What color is the square?", "Red and blue."),
        ("Is there a blue square?", "Yes"),
        ("Are there any yellow shapes?", "No"),
        ("Describe this.", "I see two red shapes and one blue shape on a white background."),
    ],
)
async def test_query_answers_from_what_it_sees(cloud: RunningEmulator, question: str, answer: str) -> None:
    body = (await post(cloud, "/query", {"image_url": TWO_RED_ONE_BLUE, "question": question})).json()
    assert body["answer"] == answer
    assert "reasoning" not in body


async def test_query_without_an_image_is_answered_from_text(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/query", {"question": "What is the capital of France?"})
    assert response.status_code == 200
    assert response.json()["answer"] == "I need an image to answer that."


async def test_query_reasoning_grounds_each_colour_phrase_at_its_region_centres(
    cloud: RunningEmulator,
) -> None:
    request = {"image_url": TWO_RED_ONE_BLUE, "question": "How many red squares?", "reasoning": True}
    body = (await post(cloud, "/query", request)).json()
    text, grounding = body["reasoning"]["text"], body["reasoning"]["grounding"]
    assert [text[g["start_idx"] : g["end_idx"]] for g in grounding] == ["two red shapes", "one blue shape"]
    assert grounding[0]["points"] == [
        pytest.approx([0.6, 0.7], abs=0.01),
        pytest.approx([0.2, 0.2], abs=0.01),
    ]
    assert grounding[1]["points"] == [pytest.approx([0.85, 0.233], abs=0.01)]
    assert body["answer"] == "2"


async def test_max_tokens_cuts_the_text_and_the_finish_reason_says_so(cloud: RunningEmulator) -> None:
    request = {"image_url": TWO_RED_ONE_BLUE, "settings": {"max_tokens": 3, "temperature": 0, "top_p": 1}}
    body = (await post(cloud, "/caption", request)).json()
    assert (body["caption"], body["finish_reason"]) == ("An image showing", "length")


async def test_unknown_request_keys_are_ignored(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/point", {"image_url": RED_SQUARE, "object": "red", "future_option": [1, 2]})
    assert response.status_code == 200 and len(response.json()["points"]) == 1


async def test_the_base_model_may_be_named(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/detect", {"image_url": RED_SQUARE, "object": "red", "model": "moondream3-preview"})
    assert response.status_code == 200


# --- validation -----------------------------------------------------------------------------------

GOOD = {
    "/detect": {"image_url": RED_SQUARE, "object": "red"},
    "/caption": {"image_url": RED_SQUARE},
    "/query": {"image_url": RED_SQUARE, "question": "How many?"},
    "/segment": {"image_url": RED_SQUARE, "object": "red"},
    "/point": {"image_url": RED_SQUARE, "object": "red"},
}


@pytest.mark.parametrize(
    ("path", "change", "status", "param"),
    [
        ("/detect", {"image_url": None}, 400, "image_url"),
        ("/caption", {"image_url": None}, 400, "image_url"),
        ("/detect", {"image_url": "https://example.com/cat.jpg"}, 400, "image_url"),
        ("/detect", {"image_url": "data:text/plain;base64,aGVsbG8="}, 400, "image_url"),
        ("/detect", {"image_url": "data:image/png;base64,not base64!"}, 400, "image_url"),
        (
            "/detect",
            {"image_url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()},
            400,
            "image_url",
        ),
        ("/detect", {"object": None}, 400, "object"),
        ("/detect", {"object": ""}, 400, "object"),
        ("/detect", {"object": "   "}, 400, "object"),
        ("/query", {"question": None}, 400, "question"),
        ("/query", {"question": "\n"}, 400, "question"),
        ("/caption", {"length": "medium"}, 400, "length"),
        ("/caption", {"settings": {"temperature": -0.1}}, 400, "settings.temperature"),
        ("/caption", {"settings": {"temperature": "hot"}}, 400, "settings.temperature"),
        ("/caption", {"settings": {"top_p": 0}}, 400, "settings.top_p"),
        ("/caption", {"settings": {"top_p": 1.5}}, 400, "settings.top_p"),
        ("/caption", {"settings": {"max_tokens": 0}}, 400, "settings.max_tokens"),
        ("/detect", {"settings": {"max_objects": 0}}, 400, "settings.max_objects"),
        ("/detect", {"settings": {"max_objects": "5"}}, 400, "settings.max_objects"),
        ("/detect", {"model": "moondream2"}, 400, "model"),
        ("/detect", {"model": "moondream3-preview/01JABCDEF@20"}, 404, "model"),
        ("/segment", {"spatial_refs": [[0.5]]}, 400, "spatial_refs"),
        ("/segment", {"spatial_refs": [[0.5, 1.5]]}, 400, "spatial_refs"),
        ("/segment", {"spatial_refs": "center"}, 400, "spatial_refs"),
        ("/point", {"spatial_refs": [[0.5, 0.5, 0.7]]}, 400, "spatial_refs"),
        ("/query", {"spatial_refs": [[-0.1, 0.5]]}, 400, "spatial_refs"),
    ],
)
async def test_an_invalid_request_is_refused_with_the_nested_error(
    cloud: RunningEmulator, path: str, change: dict, status: int, param: str
) -> None:
    request = {k: v for k, v in (GOOD[path] | change).items() if v is not None}
    nested_error(await post(cloud, path, request), status, param)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
async def test_a_body_that_is_not_a_json_object_is_refused(cloud: RunningEmulator, body: bytes) -> None:
    nested_error(await post(cloud, "/caption", body), 400)


async def test_an_image_over_10_mb_is_refused_as_too_large(cloud: RunningEmulator) -> None:
    huge = "data:image/png;base64," + "A" * (10 * 1024 * 1024)
    nested_error(await post(cloud, "/caption", {"image_url": huge}), 413, "image_url")


@pytest.mark.parametrize("headers", [{}, {"X-Moondream-Auth": ""}, {"X-Moondream-Auth": "someone-elses-key"}])
async def test_a_missing_or_unknown_key_is_refused_with_401(cloud: RunningEmulator, headers: dict) -> None:
    error = nested_error(await post(cloud, "/caption", {"image_url": RED_SQUARE}, headers), 401)
    assert error["type"] == "authentication_error"
    assert cloud.emulator.requests[-1].status == 401


async def test_any_non_empty_key_is_accepted_when_no_keys_are_configured() -> None:
    with running_emulator() as running:
        response = await post(running, "/caption", {"image_url": RED_SQUARE}, {"X-Moondream-Auth": "anything"})
        assert response.status_code == 200
        nested_error(await post(running, "/caption", {"image_url": RED_SQUARE}, {}), 401)


async def test_unknown_paths_and_methods_get_json_errors(cloud: RunningEmulator) -> None:
    nested_error(await post(cloud, "/teleport", {}), 404)
    async with httpx2.AsyncClient(base_url=cloud.url, headers=AUTH) as http:
        nested_error(await http.get("/detect"), 405)


# --- streams --------------------------------------------------------------------------------------


async def test_a_streamed_caption_concatenates_to_the_plain_one(cloud: RunningEmulator) -> None:
    plain = (await post(cloud, "/caption", {"image_url": TWO_RED_ONE_BLUE, "length": "long"})).json()
    streamed = await events(cloud, "/caption", {"image_url": TWO_RED_ONE_BLUE, "length": "long", "stream": True})
    assert len(streamed) > 2
    assert all(e["completed"] is False for e in streamed[:-1]) and streamed[-1]["completed"] is True
    assert "".join(e["chunk"] for e in streamed) == plain["caption"]
    assert {e["request_id"] for e in streamed} == {streamed[-1]["request_id"]}
    assert streamed[-1]["finish_reason"] == "stop" and streamed[-1]["metrics"] == plain["metrics"]


async def test_a_streamed_query_concatenates_to_the_plain_answer(cloud: RunningEmulator) -> None:
    request = {"image_url": TWO_RED_ONE_BLUE, "question": "Describe the picture", "reasoning": False}
    plain = (await post(cloud, "/query", request)).json()
    streamed = await events(cloud, "/query", request | {"stream": True})
    assert "".join(e["chunk"] for e in streamed) == plain["answer"]
    assert streamed[-1]["completed"] is True


async def test_a_streamed_segment_sends_the_bbox_then_a_coarse_path_then_the_final_path(
    cloud: RunningEmulator,
) -> None:
    plain = (await post(cloud, "/segment", {"image_url": RED_SQUARE, "object": "red"})).json()
    bbox, delta, final = await events(cloud, "/segment", {"image_url": RED_SQUARE, "object": "red", "stream": True})
    assert bbox == {"type": "bbox", "bbox": plain["bbox"]}
    assert delta["type"] == "path_delta" and delta["completed"] is False and path_points(delta["chunk"])
    assert {k: v for k, v in final.items() if k != "request_id"} == {
        "type": "final",
        "path": plain["path"],
        "bbox": plain["bbox"],
        "completed": True,
    }


async def test_detect_ignores_stream_and_answers_plainly(cloud: RunningEmulator) -> None:
    response = await post(cloud, "/detect", {"image_url": RED_SQUARE, "object": "red", "stream": True})
    assert response.headers["content-type"] == "application/json"


# --- Moondream Station ----------------------------------------------------------------------------


async def test_station_needs_no_key_and_reports_request_errors_as_200_with_a_flat_error(
    station: RunningEmulator,
) -> None:
    ok = await post(station, "/detect", {"image_url": RED_SQUARE, "object": "red"}, headers={})
    assert ok.status_code == 200 and len(ok.json()["objects"]) == 1
    refused = await post(station, "/detect", {"image_url": RED_SQUARE, "object": "  "}, headers={})
    assert refused.status_code == 200
    assert set(refused.json()) == {"error"} and isinstance(refused.json()["error"], str)


async def test_station_streams_one_token_per_event_then_stats_then_completed(
    station: RunningEmulator,
) -> None:
    plain = (await post(station, "/caption", {"image_url": TWO_RED_ONE_BLUE}, headers={})).json()["caption"]
    streamed = await events(station, "/caption", {"image_url": TWO_RED_ONE_BLUE, "stream": True}, headers={})
    *tokens, stats, completed = streamed
    assert all(set(e) == {"chunk"} and len(e["chunk"].split()) == 1 for e in tokens)
    assert "".join(e["chunk"] for e in tokens) == plain
    assert set(stats) == {"stats"} and completed == {"completed": True}
    assert set(stats["stats"]) == {"tokens", "duration", "tokens_per_sec"} and stats["stats"]["tokens"] == len(tokens)


async def test_station_answers_carry_their_stats_and_no_request_id(station: RunningEmulator) -> None:
    answer = (await post(station, "/query", {"image_url": RED_SQUARE, "question": "How many red?"}, headers={})).json()
    assert answer["answer"] == "1" and "request_id" not in answer
    assert set(answer["_stats"]) == {"tokens", "duration", "tokens_per_sec"} and answer["_stats"]["tokens"] > 0


async def test_station_refuses_a_query_without_an_image(station: RunningEmulator) -> None:
    refused = await post(station, "/query", {"question": "What is the capital of France?"}, headers={})
    assert refused.status_code == 200 and "image_url" in refused.json()["error"]


async def test_a_query_streams_with_reasoning_on_and_its_reasoning_rides_on_the_last_event(
    cloud: RunningEmulator,
) -> None:
    body = {"image_url": TWO_RED_ONE_BLUE, "question": "How many red shapes?", "reasoning": True}
    plain = (await post(cloud, "/query", body)).json()
    *chunks, last = await events(cloud, "/query", {**body, "stream": True})
    assert "".join(e["chunk"] for e in [*chunks, last]) == plain["answer"] == "2"
    assert last["completed"] is True and last["reasoning"] == plain["reasoning"]


# --- faults and limits ----------------------------------------------------------------------------


async def test_an_injected_429_carries_retry_after_and_the_nested_error(cloud: RunningEmulator) -> None:
    cloud.emulator.inject(429, retry_after=2)
    response = await post(cloud, "/caption", {"image_url": RED_SQUARE})
    assert response.headers["retry-after"] == "2"
    assert nested_error(response, 429)["type"] == "rate_limit_error"
    assert (await post(cloud, "/caption", {"image_url": RED_SQUARE})).status_code == 200


async def test_an_injected_body_is_sent_verbatim_as_plain_text(cloud: RunningEmulator) -> None:
    cloud.emulator.inject(524, body="error code: 524")
    response = await post(cloud, "/caption", {"image_url": RED_SQUARE})
    assert (response.status_code, response.text) == (524, "error code: 524")
    assert response.headers["content-type"].startswith("text/plain")


async def test_injected_faults_hit_only_their_path_and_run_out(cloud: RunningEmulator) -> None:
    cloud.emulator.inject(503, times=2, path="/detect")
    detect = {"image_url": RED_SQUARE, "object": "red"}
    statuses = [(await post(cloud, "/point", detect)).status_code]
    statuses += [(await post(cloud, "/detect", detect)).status_code for _ in range(3)]
    assert statuses == [200, 503, 503, 200]
    assert [(r.path, r.status) for r in cloud.emulator.requests] == [
        ("/v1/point", 200),
        ("/v1/detect", 503),
        ("/v1/detect", 503),
        ("/v1/detect", 200),
    ]


async def test_a_dropped_connection_gets_no_response_at_all(cloud: RunningEmulator) -> None:
    cloud.emulator.inject_drop()
    with pytest.raises(httpx2.RemoteProtocolError):
        await post(cloud, "/caption", {"image_url": RED_SQUARE})
    assert (await post(cloud, "/caption", {"image_url": RED_SQUARE})).status_code == 200
    assert [r.status for r in cloud.emulator.requests] == [0, 200]


async def test_a_truncated_stream_stops_after_its_first_event(cloud: RunningEmulator) -> None:
    cloud.emulator.inject_truncate()
    # A plain answer does not use up the fault: only a stream does.
    assert (await post(cloud, "/caption", {"image_url": RED_SQUARE})).status_code == 200
    received = b""
    with anyio.fail_after(10):
        async with (
            httpx2.AsyncClient(base_url=cloud.url, headers=AUTH) as http,
            http.stream("POST", "/caption", json={"image_url": RED_SQUARE, "stream": True}) as response,
        ):
            assert response.status_code == 200
            with pytest.raises(httpx2.RemoteProtocolError):
                async for chunk in response.aiter_bytes():
                    received += chunk
    (only,) = [json.loads(b[len(b"data: ") :]) for b in received.split(b"\n\n") if b]
    assert only["completed"] is False
    assert len(await events(cloud, "/caption", {"image_url": RED_SQUARE, "stream": True})) > 1


async def test_the_rate_limit_refuses_the_excess_per_key_with_retry_after() -> None:
    with running_emulator(Emulator(EmulatorConfig(rate_limit=1))) as running:
        request = {"image_url": RED_SQUARE}
        first = await post(running, "/caption", request, {"X-Moondream-Auth": "a"})
        second = await post(running, "/caption", request, {"X-Moondream-Auth": "a"})
        other_key = await post(running, "/caption", request, {"X-Moondream-Auth": "b"})
    assert (first.status_code, other_key.status_code) == (200, 200)
    assert nested_error(second, 429)["type"] == "rate_limit_error"
    assert second.headers["retry-after"] == "1"


async def test_latency_delays_every_answer() -> None:
    with running_emulator(Emulator(EmulatorConfig(latency=0.3))) as running:
        started = time.monotonic()
        await post(running, "/caption", {"image_url": RED_SQUARE}, {"X-Moondream-Auth": "k"})
        assert time.monotonic() - started >= 0.3


async def test_concurrent_requests_with_large_images_are_all_answered(cloud: RunningEmulator) -> None:
    big = data_url(picture([("red", (500, 500, 1500, 1500))], size=(2000, 2000)))
    async with anyio.create_task_group() as tasks:
        for i in range(4):
            tasks.start_soon(post, cloud, "/detect", {"image_url": big if i % 2 else RED_SQUARE, "object": "red"})
    assert [r.status for r in cloud.emulator.requests] == [200] * 4


# --- the request log and control endpoints --------------------------------------------------------


async def test_the_log_keeps_method_path_headers_body_status_and_arrival_time(cloud: RunningEmulator) -> None:
    before = time.monotonic()
    await post(cloud, "/query", {"question": "Hi?", "reasoning": False}, AUTH | {"User-Agent": "tester/1"})
    (logged,) = cloud.emulator.requests
    assert (logged.method, logged.path, logged.status) == ("POST", "/v1/query", 200)
    assert logged.headers["x-moondream-auth"] == KEY and logged.headers["user-agent"] == "tester/1"
    assert logged.json == {"question": "Hi?", "reasoning": False}
    assert before <= logged.at <= time.monotonic()


async def test_control_endpoints_inject_faults_list_the_log_without_images_and_clear_it(
    cloud: RunningEmulator,
) -> None:
    root = cloud.url.removesuffix("/v1")
    async with httpx2.AsyncClient(base_url=root) as http:
        assert (await http.post("/_emulator/faults", json={"status": 502, "times": 1, "path": "/caption"})).json() == {
            "ok": True
        }
        assert (await http.post("/_emulator/faults", json={"nothing": 1})).status_code == 400
        assert (await post(cloud, "/caption", {"image_url": RED_SQUARE})).status_code == 502
        (entry,) = (await http.get("/_emulator/requests")).json()["requests"]
        assert entry["status"] == 502
        assert entry["json"] == {"image_url": f"<{len(RED_SQUARE)} characters>"}
        assert (await http.post("/_emulator/clear")).json() == {"ok": True}
        assert (await http.get("/_emulator/requests")).json() == {"requests": []}


def test_running_emulator_stops_listening_when_the_block_ends() -> None:
    with running_emulator() as running:
        port = int(running.url.rsplit(":", 1)[1].split("/")[0])
        assert running.url == f"http://127.0.0.1:{port}/v1"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
