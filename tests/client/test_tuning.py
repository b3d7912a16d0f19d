"""The tuning client reads what the official SDK's types document, fields the emulator leaves empty included."""

from __future__ import annotations

import json

import httpx2
import pytest

from moondream_mcp.client import MoondreamClient

pytestmark = pytest.mark.anyio

# A checkpoint page as the official SDK's CheckpointListOutput types it, expiry included.
PAGE = {
    "checkpoints": [
        {
            "checkpoint_id": "01JCHECKPOINT0000000000000",
            "finetune_id": "01JFINETUNE000000000000000",
            "step": 12,
            "created_at_ms": 1736937000000,
            "updated_at_ms": 1736937000500,
            "expires_at_ms": 1739529000000,
        }
    ],
    "next_cursor": None,
    "has_more": False,
}


async def test_a_checkpoint_passes_its_expiry_through() -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=json.dumps(PAGE).encode(), headers={"content-type": "application/json"})

    async with MoondreamClient(
        endpoint="http://api.test/v1", api_key="k", transport=httpx2.MockTransport(answer)
    ) as md:
        page = await md.tuning.list_checkpoints("01JFINETUNE000000000000000")
    assert [(c.step, c.expires_at_ms) for c in page.checkpoints] == [(12, 1739529000000)]
