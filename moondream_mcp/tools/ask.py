"""One question about several images at once, as an MCP tool: ask (the chat endpoint)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..client import Sampling
from ..client.chat import Turn
from ..state import Ctx
from ..vision import Reply
from . import bounds
from .results import compact
from .skills import READ_ONLY, MaxTokens, Question, Reasoning, Temperature, TopP
from .toolsets import Toolbox


class PastTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(max_length=bounds.TEXT_CHARS)


def register(tools: Toolbox) -> None:
    @tools.tool("vision", read_only=True, title="Ask about several images", annotations=READ_ONLY)
    @compact
    async def ask(
        question: Question,
        images: Annotated[
            list[str],
            Field(min_length=1, max_length=8, description="Paths or URLs."),
        ],
        ctx: Ctx,
        history: Annotated[list[PastTurn] | None, Field(max_length=bounds.TURNS, description="Earlier turns.")] = None,
        reasoning: Reasoning = False,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
    ) -> Reply:
        """One question about several images. Cloud only."""
        state = ctx.request_context.lifespan_context
        with state.errors():
            return await state.vision.ask(
                question,
                images,
                history=[Turn(role=t.role, content=t.content) for t in history or ()],
                reasoning=reasoning,
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
            )
