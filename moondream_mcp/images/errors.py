"""The one error an image reference can raise; references are named in it as files.describe names them."""

from __future__ import annotations

from ..files import describe

__all__ = ["ImageError", "describe"]


class ImageError(Exception):
    """A reference that cannot be turned into an image.

    str(e) is a short message safe to show an AI agent: it names the reference and says what to do.
    It never carries file or response content.
    """
