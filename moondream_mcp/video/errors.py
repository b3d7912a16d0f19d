"""The one error a video can raise, and the check that PyAV (the `video` extra) is installed."""

from __future__ import annotations

from ..failures import InputError

EXTRA = "install the video extra: pip install -e '.[video]' in the server's clone (or pip install av)"


class VideoError(InputError):
    """A video that cannot be read or written, or arguments that cannot work on it: a sentence for the model."""


def require_av() -> None:
    """Raise a VideoError naming the extra when PyAV is missing; the rest of the server works without it."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise VideoError(f"the video tools need PyAV, which is not installed; {EXTRA}.") from None
