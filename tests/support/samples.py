"""Pictures for the image tests, including hostile ones, and ways to look inside what was sent."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

from moondream_mcp.images import PreparedImage

Colour = tuple[int, int, int]
RED: Colour = (255, 0, 0)
BLUE: Colour = (0, 0, 255)
WHITE: Colour = (255, 255, 255)


def sent(prepared: PreparedImage) -> Image.Image:
    """The image the API would receive."""
    return Image.open(io.BytesIO(prepared.jpeg)).convert("RGB")


def colour_at(prepared: PreparedImage, x: float, y: float) -> Colour:
    """The sent colour at a normalized point of the picture as displayed."""
    image = sent(prepared)
    return image.getpixel((int(x * image.width), int(y * image.height)))  # type: ignore[return-value]


def near(actual: Colour, expected: Colour, tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def jpeg_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def png_bomb(path: Path, width: int, height: int) -> Path:
    """An all-black 1-bit PNG: a few hundred KB on disk, width*height pixels once decoded."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    batch = max(1, (1 << 20) // len(row))  # rows compressed a megabyte at a time: 64 million rows stay quick
    parts = [packer.compress(row * min(batch, height - start)) for start in range(0, height, batch)]
    idat = b"".join(parts) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def jpeg_bomb(path: Path, width: int, height: int) -> Path:
    """A tiny JPEG whose header claims width x height: what a decoder would allocate, not what it holds."""
    data = bytearray(jpeg_bytes(Image.new("RGB", (16, 16), "white")))
    sof = data.index(b"\xff\xc0")  # baseline start-of-frame: length(2) precision(1) height(2) width(2)
    struct.pack_into(">HH", data, sof + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def many_scans_jpeg(path: Path, scans: int, size: tuple[int, int] = (2000, 2000)) -> Path:
    """A progressive JPEG whose smallest scan is repeated until it holds `scans` scans: each one more pass
    over every block of the image for the decoder, yet only a few bytes in the file."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    found = _scans(data)
    start, end = min(found, key=lambda scan: scan[1] - scan[0])
    last = found[-1][1]
    path.write_bytes(data[:last] + data[start:end] * (scans - len(found)) + data[last:])
    return path


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan of a JPEG: its SOS segment and the entropy-coded data after it."""
    found = []
    at = 2
    while data[at + 1] != 0xD9:
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        end = at + 2 + length
        if data[at + 1] == 0xDA:
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
            found.append((at, end))
        at = end
    return found
