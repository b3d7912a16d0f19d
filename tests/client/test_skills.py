"""The skills client against the emulator: plain and streamed answers agree; Station's dialect is understood."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest

from moondream_emulator import Emulator, EmulatorConfig, RunningEmulator, running_emulator
from moondream_mcp.client import APIStatusError, MoondreamClient, NotConfiguredError, StreamError
from moondream_mcp.client.base import APIClient
from moondream_mcp.client.skills import Skills
from tests.support.keys import API_KEY
from tests.support.pictures import canvas

pytestmark = pytest.mark.anyio


def data_url(**options: object) -> str:
    buffer = io.BytesIO()
    canvas(**options).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


SQUARES = data_url(squares=[("red", (0.1, 0.1, 0.3, 0.3)), ("blue", (0.5, 0.5, 0.9, 0.8))])


@pytest.fixture(scope="module")
def station() -> Iterator[RunningEmulator]:
    with running_emulator(Emulator(EmulatorConfig(no_auth=True))) as running:
        yield running


async def test_a_streamed_caption_equals_the_plain_one(emulator) -> None:
    async with MoondreamClient(endpoint=emulator.url, api_key=API_KEY) as md:
        plain = await md.skills.caption(SQUARES, length="long")
        pieces: list[str] = []
        streamed = await md.skills.caption(SQUARES, length="long", stream=True, on_text=pieces.append)
    assert streamed.caption == plain.caption
    assert len(pieces) > 1 and "".join(pieces) == plain.caption
    assert streamed.finish_reason == "stop" and streamed.request_id


async def test_a_streamed_query_equals_the_plain_one(emulator) -> None:
    async with MoondreamClient(endpoint=emulator.url, api_key=API_KEY) as md:
        plain = await md.skills.query("What colours are there?", image_url=SQUARES)
        streamed = await md.skills.query("What colours are there?", image_url=SQUARES, stream=True)
    assert streamed.answer == plain.answer
    assert emulator.emulator.requests[-1].json["stream"] is True


async def test_a_streamed_segment_ends_with_the_final_path(emulator) -> None:
    async with MoondreamClient(endpoint=emulator.url, api_key=API_KEY) as md:
        plain = await md.skills.segment(SQUARES, "blue")
        streamed = await md.skills.segment(SQUARES, "blue", stream=True)
    assert streamed.path == plain.path and streamed.bbox == plain.bbox


async def test_a_truncated_stream_is_retried(emulator) -> None:
    emulator.emulator.inject_truncate(times=1)
    async with MoondreamClient(endpoint=emulator.url, api_key=API_KEY) as md:
        result = await md.skills.caption(SQUARES, stream=True)
    assert result.caption
    assert len([r for r in emulator.emulator.requests if r.path.endswith("/caption")]) == 2


async def test_a_stream_that_never_completes_is_an_error(emulator) -> None:
    emulator.emulator.inject_truncate(times=10)
    async with APIClient(endpoint=emulator.url, api_key=API_KEY, max_attempts=2) as api:
        with pytest.raises(StreamError):
            await Skills(api).caption(SQUARES, stream=True)


async def test_station_needs_no_key_and_gets_no_auth_header(station: RunningEmulator) -> None:
    async with MoondreamClient(endpoint=station.url) as md:
        result = await md.skills.detect(SQUARES, "red")
    assert len(result.objects) == 1
    assert "x-moondream-auth" not in station.emulator.requests[-1].headers


async def test_station_streams_one_token_per_event(station: RunningEmulator) -> None:
    async with MoondreamClient(endpoint=station.url) as md:
        plain = await md.skills.caption(SQUARES)
        streamed = await md.skills.caption(SQUARES, stream=True)
    assert streamed.caption == plain.caption


async def test_a_station_error_with_status_200_is_an_error(station: RunningEmulator) -> None:
    async with MoondreamClient(endpoint=station.url) as md:
        with pytest.raises(APIStatusError) as caught:
            await md.skills.detect(SQUARES, "   ")
    assert caught.value.status_code == 200 and caught.value.message


async def test_the_cloud_without_a_key_fails_before_sending() -> None:
    async with MoondreamClient(endpoint="https://api.moondream.ai/v1") as md:
        with pytest.raises(NotConfiguredError, match="MOONDREAM_API_KEY"):
            await md.skills.caption(SQUARES)
