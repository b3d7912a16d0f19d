"""The emulator's OpenAI-compatible chat endpoint over HTTP: bearer auth, images as data URLs, streams."""

from __future__ import annotations

import base64
import io
import json

import anyio
import httpx2
import pytest

from tests.support.keys import API_KEY
from tests.support.pictures import canvas

pytestmark = pytest.mark.anyio


def data_url(colour: str) -> str:
    buffer = io.BytesIO()
    canvas((200, 150), [(colour, (0.2, 0.2, 0.6, 0.6))]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def body(question: str, *urls: str, **extra: object) -> dict:
    parts = [{"type": "text", "text": question}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"model": "moondream/moondream3-preview", "messages": [{"role": "user", "content": parts}], **extra}


async def post(emulator, payload: dict, headers: dict[str, str] | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"} if headers is None else headers
    with anyio.fail_after(10):
        async with httpx2.AsyncClient() as http:
            return await http.post(f"{emulator.url}/chat/completions", json=payload, headers=headers)


async def test_a_completion_counts_across_images_in_the_openai_shape(emulator) -> None:
    answer = await post(emulator, body("How many red shapes?", data_url("red"), data_url("red"), data_url("blue")))
    assert answer.status_code == 200, answer.text
    completion = answer.json()
    assert completion["object"] == "chat.completion" and completion["id"].startswith("chatcmpl-")
    (choice,) = completion["choices"]
    assert choice["message"] == {"role": "assistant", "content": "2"} and choice["finish_reason"] == "stop"
    assert completion["usage"]["total_tokens"] == sum(
        completion["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )


async def test_the_key_goes_as_a_bearer_token_not_in_the_moondream_header(emulator) -> None:
    refused = await post(emulator, body("Hi?", data_url("red")), {"X-Moondream-Auth": API_KEY})
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (body("What is it?", "https://example.com/cat.jpg"), "messages[0].content[1].image_url"),
        ({**body("What is it?"), "model": None}, "model"),
        ({**body("What is it?"), "model": "gpt-4o"}, "model"),
        ({"model": "moondream3-preview", "messages": []}, "messages"),
        ({**body("Hi"), "messages": [{"role": "assistant", "content": "Hello"}]}, "messages"),
        (body("Hi", temperature=-1), "temperature"),
    ],
)
async def test_a_bad_request_is_refused_with_the_openai_error_shape(emulator, payload: dict, param: str) -> None:
    refused = await post(emulator, payload)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


async def test_a_stream_of_deltas_ends_with_done_and_joins_to_the_answer(emulator) -> None:
    payload = body("What colours are there?", data_url("red"), data_url("blue"), max_completion_tokens=2)
    plain = (await post(emulator, payload)).json()["choices"][0]
    assert (plain["message"]["content"], plain["finish_reason"]) == ("Red and", "length")
    with anyio.fail_after(10):
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                f"{emulator.url}/chat/completions",
                json={**payload, "stream": True},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
    datas = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Red and"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
