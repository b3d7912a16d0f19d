"""Fixtures of the image tests."""

from __future__ import annotations

import pytest
from PIL import JpegImagePlugin


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size each JPEG draft decode produces, in order."""
    sizes: list[tuple[int, int]] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):  # type: ignore[no-untyped-def]
        result = original_draft(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    return sizes
