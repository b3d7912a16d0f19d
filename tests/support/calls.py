"""Calling a tool through the protocol and insisting on how it ends: a result, or a clear refusal."""

from __future__ import annotations

import uuid

import anyio
from mcp import Client

from tests.support.keys import API_KEY

BOUND = 60  # seconds: no call in these tests may hang


async def call(client: Client, tool: str, **arguments: object) -> dict:
    """The structured result of a call that must succeed."""
    with anyio.fail_after(BOUND):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def refusal(client: Client, tool: str, **arguments: object) -> str:
    """The message of a call that must fail cleanly: a tool error, no stack trace, never the key."""
    with anyio.fail_after(BOUND):
        result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text
    assert API_KEY not in text
    assert "Traceback" not in text
    return text


def unique(prefix: str = "ft") -> str:
    """A finetune name no other test uses (the session's emulator keeps every finetune)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
