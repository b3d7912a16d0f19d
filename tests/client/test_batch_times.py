"""Batch jobs' timestamps arrive in whatever form the API words them and leave as Unix milliseconds."""

from __future__ import annotations

import pytest

from moondream_mcp.client.batch import BatchJob

MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    "worded",
    ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00", 1_767_225_600, MS],
)
def test_a_timestamp_in_any_usual_form_becomes_unix_milliseconds(worded: object) -> None:
    assert BatchJob.model_validate({"id": "b", "status": "completed", "created_at": worded}).created_at_ms == MS


@pytest.mark.parametrize("worded", [None, "", "yesterday", {"seconds": 1}])
def test_a_missing_or_unreadable_timestamp_is_none_not_a_failed_answer(worded: object) -> None:
    job = BatchJob.model_validate({"id": "b", "status": "failed", "completed_at": worded})
    assert job.completed_at_ms is None
