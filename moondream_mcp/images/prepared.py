"""What preparing an image yields, and which files count as images; apart from the decoding itself, so that
a server that has not yet looked at a picture has not loaded Pillow either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

# The API refuses images over 10 MB; the limit applies to the data URL as sent.
MAX_DATA_URL_CHARS = 10 * 1024 * 1024

# The names taken for images when a folder or glob is listed: the formats prepare() decodes.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)


def is_image_name(name: str) -> bool:
    """Whether a file name is taken for an image when a folder or glob is listed."""
    return PurePath(name).suffix.lower() in IMAGE_SUFFIXES


class DataURL(str):
    """A data URL made here: "data:image/jpeg;base64," and base64, nothing that JSON would escape, so a request
    body may take it as it is (escaping a megabyte-long string costs milliseconds on every call)."""

    __slots__ = ()


@dataclass(frozen=True)
class PreparedImage:
    data_url: DataURL  # "data:image/jpeg;base64,...", always under MAX_DATA_URL_CHARS
    jpeg: bytes  # the JPEG bytes the data URL encodes: what was sent
    width: int  # the original image as displayed (after EXIF orientation)
    height: int
    sent_width: int  # the JPEG actually encoded
    sent_height: int
