"""The standard OpenAI Python client against the emulator's /v1/chat/completions, plain and streamed: the
endpoint is OpenAI-compatible only if the client everyone already has works unmodified."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from tests.support.keys import API_KEY
from tests.support.pictures import canvas


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def client(emulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.url, api_key=API_KEY, max_retries=0, timeout=30)


def question(text: str) -> list[dict]:
    shots = [
        canvas((400, 300), [("red", (0.25, 0.2, 0.5, 0.6))]),
        canvas((300, 300), [("red", (0.1, 0.1, 0.3, 0.3)), ("green", (0.5, 0.5, 0.9, 0.9))]),
    ]
    parts = [{"type": "image_url", "image_url": {"url": data_url(shot)}} for shot in shots]
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": text}, *parts]},
    ]


def test_a_plain_completion_answers_across_the_images(client: openai.OpenAI, emulator) -> None:
    completion = client.chat.completions.create(
        model="moondream3-preview", messages=question("How many red shapes are there?"), temperature=0, max_tokens=16
    )
    assert completion.choices[0].message.content == "2"
    assert completion.choices[0].finish_reason == "stop" and completion.usage.completion_tokens == 1
    assert emulator.emulator.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


def test_a_streamed_completion_joins_to_the_plain_answer(client: openai.OpenAI) -> None:
    messages = question("Which image shows a green shape?")
    plain = client.chat.completions.create(model="moondream/moondream3-preview", messages=messages)
    stream = client.chat.completions.create(model="moondream/moondream3-preview", messages=messages, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert plain.choices[0].message.content == "Image 2."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_reasoning_comes_back_beside_the_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="moondream3-preview", messages=question("What colours are there?"), extra_body={"reasoning": True}
    )
    message = completion.choices[0].message
    assert message.content == "Red and green."
    extra = message.model_extra or {}
    assert "red shape" in extra["reasoning"] and extra["reasoning_details"]["grounding"]


def test_a_refusal_arrives_as_the_clients_own_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="moondream3-preview",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]}
            ],
        )
    assert "data:image" in caught.value.message
