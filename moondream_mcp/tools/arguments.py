"""Tool-call arguments checked before the SDK validates them: no NaN or infinity, at any depth.

JSON has neither, but the SDK's parser takes `NaN` and `Infinity` (and reads 1e309 as infinity). A
parameter without bounds would pass them on to code that cannot send them (JSON encoding refuses
them), which then fails as a crash: a bare "Error executing tool" and a traceback in the log.
"""

from __future__ import annotations

import math
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent


async def refuse_non_finite(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: a tools/call whose arguments hold a non-finite number ends as a tool error."""
    if ctx.method == "tools/call" and isinstance(ctx.params, dict):
        found = non_finite(ctx.params.get("arguments"))
        if found is not None:
            where, value = found
            shown = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
            message = f"invalid argument {where}: {shown} is not a number a tool can take; give a finite number."
            return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
    return await call_next(ctx)


def non_finite(arguments: Any) -> tuple[str, float] | None:
    """Where the first NaN or infinity in `arguments` is (as `a.b[2]`), and what it is; None if nowhere."""
    pending: list[tuple[str, Any]] = [("", arguments)]
    while pending:  # a loop, not recursion: the nesting is the caller's choice
        where, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "arguments", value
        if isinstance(value, dict):
            pending.extend((f"{where}.{key}" if where else str(key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None
