"""The ask tool through the protocol: one question about several images, over the chat endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal
from tests.support.keys import API_KEY
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio


@pytest.fixture
def two_photos(workdir: Path) -> list[str]:
    one_red = save(canvas((400, 300), [("red", (0.1, 0.1, 0.4, 0.5))]), workdir / "a.png")
    two_red_one_blue = canvas((200, 150), [("red", (0.1, 0.1, 0.3, 0.3)), ("red", (0.6, 0.1, 0.9, 0.4))])
    two_red_one_blue.paste("blue", (60, 100, 120, 140))
    return [one_red, save(two_red_one_blue, workdir / "b.jpg", quality=95)]


async def test_ask_counts_across_the_images_and_reports_each_size(
    client: Client, two_photos: list[str], emulator
) -> None:
    out = await call(client, "ask", question="How many red shapes are there in all?", images=two_photos)
    assert out["answer"] == "3"
    assert out["images"] == [{"width": 400, "height": 300}, {"width": 200, "height": 150}]
    assert out["reasoning"] is None and out["finish_reason"] == "stop"
    sent = emulator.emulator.requests[-1]
    assert sent.path == "/v1/chat/completions"
    # The OpenAI convention: the key as a bearer token, and only there.
    assert sent.headers["authorization"] == f"Bearer {API_KEY}" and "x-moondream-auth" not in sent.headers
    assert sent.json["model"] == "moondream3-preview" and sent.json["reasoning"] is False
    (turn,) = sent.json["messages"]
    parts = turn["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in parts[:2])


async def test_ask_names_the_image_that_shows_a_colour_after_earlier_turns(
    client: Client, two_photos: list[str], emulator
) -> None:
    history = [
        {"role": "user", "content": "I will show you two photos of shapes."},
        {"role": "assistant", "content": "Go ahead."},
    ]
    out = await call(client, "ask", question="Which image shows a blue shape?", images=two_photos, history=history)
    assert out["answer"] == "Image 2."
    assert emulator.emulator.requests[-1].json["messages"][:2] == history


async def test_ask_with_reasoning_grounds_it_in_the_images(client: Client, two_photos: list[str]) -> None:
    out = await call(
        client, "ask", question="What colours are there?", images=two_photos, reasoning=True, max_tokens=50
    )
    assert out["answer"] == "Red and blue."
    reasoning = out["reasoning"]
    spans = [reasoning["text"][g["start_idx"] : g["end_idx"]] for g in reasoning["grounding"]]
    assert spans == ["one red shape", "two red shapes", "one blue shape"]
    assert reasoning["grounding"][0]["points"] == [pytest.approx({"x": 0.25, "y": 0.3}, abs=0.02)]


async def test_ask_on_moondream_station_says_it_needs_the_cloud(workdir: Path, tmp_path: Path) -> None:
    with running_emulator(Emulator(EmulatorConfig(no_auth=True))) as station:
        settings = Settings(endpoint=station.url, allowed_dirs=[workdir], data_dir=tmp_path / "data")
        save(canvas(), workdir / "a.png")
        async with Client(build_server(settings)) as client:
            text = await refusal(client, "ask", question="What is this?", images=[str(workdir / "a.png")])
    assert "Moondream Cloud" in text and "query" in text
