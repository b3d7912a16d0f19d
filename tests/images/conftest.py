"""Fixtures of the image tests."""

from __future__ import annotations

import pytest
from PIL import ImageFile, JpegImagePlugin


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of each JPEG decode (after draft mode scaled it), in order. Headers read only to judge an
    image, without decoding it, are not counted."""
    sizes: list[tuple[int, int]] = []
    original_load = ImageFile.ImageFile.load

    def recording_load(self):  # type: ignore[no-untyped-def]
        if isinstance(self, JpegImagePlugin.JpegImageFile) and self.tile:
            sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes
