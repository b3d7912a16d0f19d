"""POST /v1/chat/completions, as OpenAI-compatible servers answer it: a checked body in, a chat.completion
(or a stream of chat.completion.chunk events ending in `data: [DONE]`) out.

The answer comes from every image of the conversation, numbered in order (model/answers.py answer_across):
counts add up across images, "which image ..." names them. Auth is `Authorization: Bearer <key>` (the
gate checks it). Moondream Station has no such endpoint.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import ApiError
from ..model import answers
from ..model.sight import sight_of
from ..skills import validation
from ..skills.handlers import SkillContext

PATH = "/v1/chat/completions"
ROLES = ("system", "user", "assistant")
_WORDS_PER_CHUNK = 2


def _invalid(param: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _images_and_text(content: Any, param: str) -> tuple[list[bytes], str]:
    """The decoded images and the joined text of one message's content: a string, or a list of parts."""
    if isinstance(content, str):
        return [], content
    if not isinstance(content, list):
        raise _invalid(param, f"{param} must be a string or a list of content parts")
    images: list[bytes] = []
    texts: list[str] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image  # a bare string, read leniently
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                raise _invalid(f"{where}.image_url", "image URLs are not fetched: send data:image/...;base64 URLs")
            try:
                data = validation.image_bytes({"image_url": url}, required=True)
            except ApiError as error:
                error.param = f"{where}.image_url"
                raise
            assert data is not None
            images.append(data)
        else:
            raise _invalid(where, f"{where} must be {{type: text, text}} or {{type: image_url, image_url: {{url}}}}")
    return images, " ".join(texts)


def _number(body: dict[str, Any], name: str, low: float, high: float, *, integer: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok or (integer and not float(value).is_integer()):
        raise _invalid(name, f"{name} must be {'an integer' if integer else 'a number'} in [{low:g}, {high:g}]")
    return value


def _checked(body: Any, ctx: SkillContext) -> dict[str, Any]:
    body = validation.request_object(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "model is required: moondream3-preview", "missing_field")
    validation.model(body, ctx.checkpoint_policy)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "messages must be a non-empty list", "missing_field")
    images: list[bytes] = []
    question = ""
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise _invalid(f"messages[{i}].role", "role must be system, user or assistant")
        found, question = _images_and_text(message.get("content"), f"messages[{i}].content")
        images += found
    if messages[-1]["role"] != "user":
        raise _invalid("messages", "the last message must be the user's")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 1e-9, 1)
    # OpenAI's two names for the same limit: the docs say max_tokens, the official SDK sends the other.
    limit = _number(body, "max_tokens", 1, 1e9, integer=True) or _number(
        body, "max_completion_tokens", 1, 1e9, integer=True
    )
    return {
        "model": model,
        "images": images,
        "question": question,
        "reasoning": validation.flag(body, "reasoning"),
        "stream": validation.flag(body, "stream"),
        "max_tokens": None if limit is None else int(limit),
    }


def _answer(checked: dict[str, Any]) -> dict[str, Any]:
    """Blocking: decodes and looks at every image."""
    scenes = [sight_of(data).scene for data in checked["images"]]
    answer, finish_reason = answers.limit(answers.answer_across(checked["question"], scenes), checked["max_tokens"])
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if checked["reasoning"]:
        trace = answers.reasoning_across(checked["question"], scenes, answer)
        message["reasoning"] = trace.text
        message["reasoning_details"] = {"grounding": trace.grounding}
    prompt = len(answers.tokens(checked["question"])) + 729 * len(scenes)
    completion = len(answers.tokens(answer))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"message": message, "finish_reason": finish_reason, "usage": usage}


async def completions(body: Any, ctx: SkillContext) -> Response:
    if ctx.station:
        raise ApiError(404, "Moondream Station has no chat endpoint", code="not_found")
    checked = _checked(body, ctx)
    out = await anyio.to_thread.run_sync(_answer, checked)
    head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": checked["model"]}
    if not checked["stream"]:
        choice = {"index": 0, "message": out["message"], "finish_reason": out["finish_reason"]}
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": out["usage"]})
    return _stream(head, out, ctx)


def _stream(head: dict[str, Any], out: dict[str, Any], ctx: SkillContext) -> Response:
    message = out["message"]
    words = answers.tokens(message["content"])
    pieces = ["".join(words[i : i + _WORDS_PER_CHUNK]) for i in range(0, len(words), _WORDS_PER_CHUNK)]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if "reasoning" in message:  # where a stream carries reasoning is unsure; clients reading content skip it
        deltas.append({"reasoning": message["reasoning"]})
    deltas += [{"content": piece} for piece in pieces]
    chunks = [{"index": 0, "delta": delta, "finish_reason": None} for delta in deltas]
    chunks.append({"index": 0, "delta": {}, "finish_reason": out["finish_reason"]})
    truncate = ctx.take_truncate()

    async def lines() -> AsyncIterator[bytes]:
        for i, choice in enumerate(chunks):
            event = {**head, "object": "chat.completion.chunk", "choices": [choice]}
            yield f"data: {json.dumps(event)}\n\n".encode()
            if truncate and i == 0:
                ctx.abort_connection()
                return
        yield b"data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
