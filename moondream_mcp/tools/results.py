"""Tool results as compact JSON text plus structured content: what the agent reads costs its context."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from mcp.types import CallToolResult, ContentBlock, TextContent
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def structured(output: BaseModel, *extra: ContentBlock) -> CallToolResult:
    """The result as compact JSON text (the SDK's default is indented) and as structured content."""
    text = TextContent(type="text", text=output.model_dump_json(exclude_none=False))
    return CallToolResult(content=[text, *extra], structured_content=output.model_dump(mode="json"))


def compact(fn: Callable[..., Awaitable[M]]) -> Callable[..., Awaitable[CallToolResult]]:
    """For tools that return a pydantic model: keep the model's output schema, send it compactly."""
    signature = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    async def tool(*args: Any, **kwargs: Any) -> CallToolResult:
        return structured(await fn(*args, **kwargs))

    # The SDK reads the output schema from the signature: Annotated[CallToolResult, Model] keeps it.
    tool.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=Annotated[CallToolResult, signature.return_annotation]
    )
    return tool
