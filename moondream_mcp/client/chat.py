"""The OpenAI-compatible chat endpoint, POST /chat/completions: several images and earlier turns in one
question. Typed result and the call."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import APIClient, parse
from .errors import UnexpectedResponseError
from .skills import GroundingSpan, Reasoning
from .tuning import BASE_MODEL

Role = Literal["user", "assistant", "system"]


class Turn(BaseModel):
    """An earlier turn of the conversation, as text."""

    role: Role
    content: str


class ChatReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: str
    reasoning: Reasoning | None = None
    finish_reason: str | None = None
    id: str | None = None
    usage: dict[str, Any] | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: str | list[Any] | None = None
    # A string as the official SDK types it; read leniently as {text, grounding} too.
    reasoning: str | dict[str, Any] | None = None
    reasoning_details: dict[str, Any] | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: _Message
    finish_reason: str | None = None


class _Completion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: dict[str, Any] | None = None


def _text(content: str | list[Any] | None) -> str:
    if isinstance(content, list):  # content parts, as OpenAI-style servers may answer
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def _reasoning(message: _Message) -> Reasoning | None:
    raw, details = message.reasoning, message.reasoning_details or {}
    if isinstance(raw, dict):
        return parse(Reasoning, raw)
    if not raw:
        return None
    grounding = details.get("grounding") if isinstance(details, dict) else None
    return Reasoning(text=raw, grounding=[parse(GroundingSpan, g) for g in grounding or ()])


def user_turn(question: str, image_urls: list[str]) -> dict[str, Any]:
    """The question with its images, as content parts: the images first, then the text."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
    parts.append({"type": "text", "text": question})
    return {"role": "user", "content": parts}


class Chat:
    """POST /chat/completions, answered whole (the tools have no use for a stream of it)."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str = BASE_MODEL,
        reasoning: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        # `reasoning` is always sent, as on /query. The docs name `max_tokens`; the official SDK sends OpenAI's
        # newer `max_completion_tokens`. Unsure which the server reads: the documented one goes, alone.
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": False, "reasoning": reasoning}
        sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        body.update({k: v for k, v in sampling.items() if v is not None})
        answer = parse(_Completion, await self._api.request("POST", "chat/completions", json=body, bearer=True))
        choice = answer.choices[0]
        if choice.message.content is None and choice.message.reasoning is None:
            raise UnexpectedResponseError("the chat answer has neither content nor reasoning")
        return ChatReply(
            content=_text(choice.message.content),
            reasoning=_reasoning(choice.message),
            finish_reason=choice.finish_reason,
            id=answer.id,
            usage=answer.usage,
        )
