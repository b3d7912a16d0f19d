"""The real server with the built-in emulator behind it, for trying every tool before having a key
(`moondream-mcp serve --emulator`, `moondream-mcp demo`). Nobody may mistake its answers for a model's:
the instructions say so, and so does every tool result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from pydantic import SecretStr

from .config import Settings

NOTICE = (
    "EMULATED: this answer comes from moondream-mcp's built-in emulator of the Moondream API, not from a "
    "model. It sees only solid-coloured regions and names them by colour. For real answers, run the server "
    "with MOONDREAM_API_KEY set and without --emulator."
)
# The emulator accepts any non-empty key; this one is never a secret.
KEY = "emulated"


def instructions(base: str) -> str:
    return f"{NOTICE}\n\n{base}"


async def mark_results(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: the notice leads every tool result, failures included."""
    result = await call_next(ctx)
    # Handlers' results reach middleware already in their wire form (a dict).
    if ctx.method == "tools/call" and isinstance(result, dict) and isinstance(result.get("content"), list):
        return {**result, "content": [{"type": "text", "text": NOTICE}, *result["content"]]}
    return result


@contextmanager
def emulator_settings(settings: Settings) -> Iterator[Settings]:
    """`settings` pointed at an emulator served on 127.0.0.1 for as long as the block runs.

    State goes to `<data_dir>/emulated`, away from real runs and batches, and starts empty: the
    emulator forgets its finetunes when it stops, so runs stored against an earlier one could only fail.
    """
    # The product imports the emulator only here, when a person asks for it.
    from moondream_emulator import running_emulator

    data_dir = settings.data_dir / "emulated"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob("state.sqlite3*"):
        stale.unlink()
    with running_emulator() as running:
        yield settings.model_copy(
            update={"endpoint": running.url, "api_key": SecretStr(KEY), "data_dir": data_dir, "rate_limit": None}
        )
