"""data:image/...;base64 references, bounded by length before a single byte is decoded."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from .errors import ImageError, describe


def decode_data_url(ref: str, max_bytes: int) -> bytes:
    label = describe(ref)
    header, comma, payload = ref.partition(",")
    if not comma:
        raise ImageError(f"malformed data URL: {label}; expected data:image/<type>;base64,<data>")
    media_type, *params = (part.strip().lower() for part in header[len("data:") :].split(";"))
    if not media_type.startswith("image/"):
        raise ImageError(f"not an image data URL: {label}; the media type must be image/<type>.")
    if "base64" not in params:
        raise ImageError(f"the data URL is not base64-encoded: {label}; use data:image/<type>;base64,<data>")

    limit = 4 * -(-max_bytes // 3)  # base64 length of exactly max_bytes
    # The cheap length test comes first so a huge string is refused without copying it; the slack
    # lets line-wrapped base64 through to the exact test below.
    if len(payload) > limit + limit // 16 + 4:
        raise ImageError(_too_large(label, max_bytes))
    compact = "".join(payload.split())
    if "%" in compact:
        compact = urllib.parse.unquote(compact)
    if len(compact) > limit:
        raise ImageError(_too_large(label, max_bytes))
    if "-" in compact or "_" in compact:
        compact = compact.translate(str.maketrans("-_", "+/"))  # the URL-safe alphabet
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"the data URL is not valid base64: {label}") from None
    if len(data) > max_bytes:
        raise ImageError(_too_large(label, max_bytes))
    if not data:
        raise ImageError(f"the data URL is empty: {label}")
    return data


def _too_large(label: str, max_bytes: int) -> str:
    return (
        f"the data URL is too large: {label} holds over {max_bytes} bytes; "
        "give a smaller image or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )
