"""Image bytes -> the JPEG the model should see: oriented as displayed, flattened onto white, right-sized.

Runs in a worker thread (decoding is CPU-bound). The input is untrusted: the header is judged before a
single pixel is decoded (size, memory it would take, JPEG scan count), only a short list of raster
formats is ever tried, and decoding stops at a deadline or when the call is cancelled.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from .errors import ImageError
from .prepared import MAX_DATA_URL_CHARS, DataURL, PreparedImage

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DATA_URL_PREFIX = "data:image/jpeg;base64,"
_JPEG_QUALITY = 90

# Formats Pillow may try. Anything else (EPS would run Ghostscript; many exotic plugins see little
# fuzzing) is not an image we read. HEIF appears once pillow-heif is registered.
_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "BMP", "TIFF")
# JPEG decodes directly at 1/2, 1/4 or 1/8 scale (draft mode), so its pixels never all reach memory.
_DRAFTABLE = frozenset({"JPEG", "MPO"})

# Decompression-bomb guard, judged from the header. Formats decoded in full must stay small enough to
# hold in memory (64 MP RGBA is 256 MB); draft-decoded JPEG may be larger, which keeps 108 MP phone
# photos readable, but stays under Pillow's own hard stop (2 x MAX_IMAGE_PIXELS, about 179 MP).
FULL_DECODE_PIXEL_FLOOR = 64_000_000
DRAFT_DECODE_PIXEL_FLOOR = 160_000_000
# A JPEG decoded at 1/2, 1/4 or 1/8 scale that lands within this fraction of the pixel budget is
# sent as decoded, without resampling: the model tiles images into ~1.7 MP of crops anyway, and the
# resample would cost more than the decode (24 MP at 1/4 is 1.5 MP: no resample at a 2 MP budget).
DRAFT_KEEP_FRACTION = 0.7

# libjpeg's JPEG_MAX_DIMENSION: no side of the JPEG sent may be longer, however narrow the image.
JPEG_MAX_SIDE = 65_500
# Each scan of a progressive JPEG is a pass over every block of the image: a small file of thousands of
# scans decodes for minutes. Encoders write about 10 (libjpeg's default script), a few dozen at most.
MAX_JPEG_SCANS = 100
# Pillow hands the decoder this much input at a time; between two blocks the deadline is checked.
_DECODE_BLOCK = 16 * 1024

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})

# The transposition that shows each EXIF orientation upright, as PIL.ImageOps.exif_transpose does it.
# Applied after downscaling, so a 24 MP photo is rotated at 2 MP.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIDEWAYS = frozenset({5, 6, 7, 8})


class Stopped(Exception):
    """Decoding was stopped: past its deadline, or its call was cancelled."""


class Watch:
    """The deadline of one decode, and the flag its cancelled call raises. Checked from the decoding thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = math.inf
        self._cancelled = threading.Event()

    def start(self) -> None:
        """The deadline runs from here: time spent queued for a decoder is not the image's fault."""
        self._deadline = time.monotonic() + self.seconds

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def stopped(self) -> bool:
        return self._cancelled.is_set() or time.monotonic() > self._deadline

    def check(self) -> None:
        if self.stopped:
            raise Stopped


class _WatchedBytes(io.BytesIO):
    """The encoded bytes, read by Pillow block by block; every read first checks the watch."""

    def __init__(self, data: bytes, watch: Watch | None) -> None:
        super().__init__(data)
        self._watch = watch

    def read(self, size: int | None = -1, /) -> bytes:
        if self._watch is not None:
            self._watch.check()
        return super().read(size)


def jpeg_scans(data: bytes) -> int:
    """How many scans a JPEG holds (0 if `data` is not a JPEG or its header cannot be walked)."""
    if data[:2] != b"\xff\xd8":
        return 0
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return 0
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:
            # In entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so every
            # later FF DA starts a scan (or a DHT crafted to look like one: counted, never missed).
            return 1 + data.count(b"\xff\xda", at + 2 + length)
        at += 2 + length
    return 0


def source_pixel_limit(max_pixels: int, *, draftable: bool) -> int:
    """The largest header size (in pixels) decoded at all."""
    floor = DRAFT_DECODE_PIXEL_FLOOR if draftable else FULL_DECODE_PIXEL_FLOOR
    return max(floor, 4 * max_pixels)


def fit_within(width: int, height: int, max_pixels: int, max_side: int = JPEG_MAX_SIDE) -> tuple[int, int]:
    """The largest size with the same aspect, at most max_pixels pixels and no side over max_side;
    never larger than given."""
    scale = min(1.0, max_side / max(width, height))
    if width * height * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    if scale >= 1.0:
        return width, height
    w, h = max(1, min(max_side, int(width * scale))), max(1, min(max_side, int(height * scale)))
    while w * h > max_pixels:  # float rounding, or an extreme aspect pinned at 1 px
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w, h


def memory_needed(data: bytes, *, max_pixels: int, label: str, memory_limit: int | None = None) -> int:
    """Bytes of memory prepare() will take for this image, judged from its header alone.

    Raises ImageError for an image refused before decoding: not an image, too many pixels, too many
    JPEG scans, or more memory than `memory_limit`.
    """
    return decode_untrusted(data, label, lambda image: _judged(image, data, max_pixels, label, memory_limit)[1])


def prepare(
    data: bytes, *, max_pixels: int, label: str, memory_limit: int | None = None, watch: Watch | None = None
) -> PreparedImage:
    """The image as the model should see it. Raises Stopped when `watch` says so."""

    def work(image: Image.Image) -> PreparedImage:
        source, _ = _judged(image, data, max_pixels, label, memory_limit)
        return _prepare_opened(image, source, max_pixels, watch)

    return decode_untrusted(data, label, work, watch)


def decode_untrusted(data: bytes, label: str, work: Callable[[Image.Image], T], watch: Watch | None = None) -> T:
    """`work` done on the opened image, every failure of hostile or broken input said as an ImageError;
    Stopped when `watch` says so (each block the decoder reads checks it)."""
    with _opened(data, label, watch) as image:
        return work(image)


@contextlib.contextmanager
def _opened(data: bytes, label: str, watch: Watch | None) -> Iterator[Image.Image]:
    try:
        with Image.open(_WatchedBytes(data, watch), formats=_available_formats()) as image:
            image.decodermaxblock = _DECODE_BLOCK
            yield image
    except (ImageError, Stopped):
        raise
    except UnidentifiedImageError:
        raise ImageError(_unreadable(data, label)) from None
    except Image.DecompressionBombError:
        raise ImageError(_bomb(label, "its header claims more pixels than Pillow will decode")) from None
    except MemoryError:
        raise ImageError(f"{label} is too large to decode in memory; give a smaller image.") from None
    except Exception:
        if watch is not None and watch.stopped:
            raise Stopped from None  # a decoder that reads through calls of its own may wrap ours
        # Third-party decoders raise all sorts on hostile input; none of it is worth more to the agent.
        logger.debug("decoding %s failed", label, exc_info=True)
        raise ImageError(f"{label} could not be decoded: the image data is truncated or corrupt.") from None


def from_pixels(image: Image.Image, *, max_pixels: int) -> PreparedImage:
    """Pixels already upright (a video frame, say) -> the JPEG to send, downscaled to the pixel budget
    (and within JPEG's side limit, however narrow the frame)."""
    flat = _flatten(_resized(image, fit_within(image.width, image.height, max_pixels)))
    return _encoded(flat, (image.width, image.height))


def check_header(image: Image.Image, data: bytes, max_pixels: int, label: str) -> None:
    """Refuses what must not be decoded at all, judged from the header: too many pixels, too many JPEG scans."""
    width, height = image.size
    draftable = image.format in _DRAFTABLE
    limit = source_pixel_limit(max_pixels, draftable=draftable)
    if width * height > limit:
        raise ImageError(_bomb(label, f"{width}x{height} pixels, over the {limit / 1e6:g} megapixel limit"))
    if draftable and (scans := jpeg_scans(data)) > MAX_JPEG_SCANS:
        raise ImageError(
            f"refused: {label} is a JPEG of {scans} scans, over the {MAX_JPEG_SCANS} decoded: that many make "
            "decoding take minutes. Re-save it as an ordinary (baseline) JPEG."
        )


def check_memory(needed: int, memory_limit: int | None, source: tuple[int, int], label: str) -> None:
    if memory_limit is not None and needed > memory_limit:
        raise ImageError(
            _bomb(
                label,
                f"{source[0]}x{source[1]} pixels would take about {needed / 1e6:,.0f} MB to decode, over the "
                f"{memory_limit / 1e6:,.0f} MB image work may use",
            )
        )


def _judged(
    image: Image.Image, data: bytes, max_pixels: int, label: str, memory_limit: int | None
) -> tuple[tuple[int, int], int]:
    """Refuses what must not be decoded; sets JPEG draft mode. Returns the size in the header (draft mode
    changes image.size) and the memory decoding will take."""
    check_header(image, data, max_pixels, label)
    width, height = image.size
    if image.format in _DRAFTABLE and fit_within(width, height, max_pixels) != (width, height):
        # Decodes at the smallest 1/2, 1/4, 1/8 scale still at least as large as what is asked for.
        image.draft("RGB", _draft_request(width, height, max_pixels))
    # Resized, flattened, turned upright, encoded: a few copies at the size sent.
    needed = decoding_memory(image, (width, height)) + 4 * _pixels_bytes(*fit_within(*image.size, max_pixels), 4)
    check_memory(needed, memory_limit, (width, height), label)
    return (width, height), needed


def decoding_memory(image: Image.Image, source: tuple[int, int]) -> int:
    """What decoding `image` (opened, draft mode set) and turning it into 8-bit RGB(A) at the decoded size
    holds at its peak, in bytes."""
    width, height = image.size  # as decoded: draft mode may have scaled it
    mode = image.mode
    held = _pixels_bytes(width, height, 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4)
    # Full-size copies on the way (_to_8bit, _resized): 16-bit tones take two; other modes one to RGB(A);
    # and Pillow resamples RGBA through a premultiplied copy.
    if mode.startswith("I;16"):
        copies = 2
    elif _has_alpha(image):
        copies = (mode != "RGBA") + 1
    else:
        copies = int(mode != "RGB")
    held += copies * _pixels_bytes(width, height, 4)
    if image.format in _DRAFTABLE and (image.info.get("progressive") or image.info.get("progression")):
        # A progressive JPEG keeps every DCT coefficient of the full-size image until its last scan
        # (two bytes each); subsampled chroma has a half or a quarter as many.
        chroma = {1: 0.5, 2: 0.25}.get(JpegImagePlugin.get_sampling(image), 1.0)
        bands = len(image.getbands())
        held += int(source[0] * source[1] * 2 * (1 + (bands - 1) * (chroma if bands == 3 else 1.0)))
    return held


def _pixels_bytes(width: int, height: int, pixel_bytes: int) -> int:
    # Pillow also keeps a pointer per row, which dominates for a tall, narrow image.
    return height * (width * pixel_bytes + 8)


def encode_jpeg(image: Image.Image, *, budget: int = MAX_DATA_URL_CHARS) -> tuple[bytes, Image.Image]:
    """JPEG bytes whose data URL is under `budget` characters, and the image they encode."""
    quality = _JPEG_QUALITY
    while True:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        jpeg = buffer.getvalue()
        if len(_DATA_URL_PREFIX) + 4 * math.ceil(len(jpeg) / 3) < budget:
            return jpeg, image
        if quality > 60:
            quality -= 15
        elif image.width > 1 or image.height > 1:
            image = image.resize(
                (max(1, int(image.width * 0.7)), max(1, int(image.height * 0.7))), Image.Resampling.LANCZOS
            )
        else:
            raise ImageError("the image cannot be encoded small enough to send")


def _prepare_opened(image: Image.Image, source: tuple[int, int], max_pixels: int, watch: Watch | None) -> PreparedImage:
    width, height = source
    target = fit_within(*image.size, max_pixels)
    orientation = _orientation(image)

    image.load()
    if watch is not None:
        watch.check()
    flat = _flatten(_resized(_to_8bit(image), target))
    upright = flat.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else flat
    # Draft mode changed image.size, so the displayed size comes from the header's.
    return _encoded(upright, (height, width) if orientation in _SIDEWAYS else (width, height))


def _encoded(image: Image.Image, shown: tuple[int, int]) -> PreparedImage:
    """`image` (upright, flattened, within the pixel budget) as the JPEG to send; `shown` is the size of the
    original as displayed."""
    jpeg, sent = encode_jpeg(image)
    return PreparedImage(
        data_url=DataURL(_DATA_URL_PREFIX + base64.b64encode(jpeg).decode("ascii")),
        jpeg=jpeg,
        width=shown[0],
        height=shown[1],
        sent_width=sent.width,
        sent_height=sent.height,
    )


def _draft_request(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The size to ask JPEG draft mode for: the smallest DCT scale keeping enough pixels to skip resampling."""
    for scale in (8, 4, 2):
        w, h = math.ceil(width / scale), math.ceil(height / scale)
        if w * h >= DRAFT_KEEP_FRACTION * max_pixels:
            return w, h
    return fit_within(width, height, max_pixels)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a malformed EXIF block is no reason to refuse the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_8bit(image: Image.Image) -> Image.Image:
    # Pillow clips 16-bit samples when converting to 8 bits, turning most 16-bit PNGs white.
    if image.mode.startswith("I;16"):
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _resized(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    mode = "RGBA" if _has_alpha(image) else "RGB"
    converted = image if image.mode == mode else image.convert(mode)
    if converted.size == target:
        return converted
    # Pillow premultiplies alpha while resampling RGBA, so no dark fringes appear at transparent edges.
    # Bilinear, which Pillow widens to the whole footprint when shrinking, is antialiased and
    # about half the cost of Lanczos on a 6 MP draft; the model cannot tell the two apart.
    return converted.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    white.alpha_composite(image)
    return white.convert("RGB")


_heif_lock = threading.Lock()
_heif_registered: bool | None = None


def heif_supported() -> bool:
    """Registers pillow-heif's HEIC/HEIF opener on first use; False when the heif extra is missing."""
    global _heif_registered
    with _heif_lock:
        if _heif_registered is None:
            try:
                import pillow_heif

                pillow_heif.register_heif_opener()
                _heif_registered = True
            except Exception:  # ImportError, or a broken native library: HEIC is then just unreadable
                logger.debug("pillow-heif unavailable", exc_info=True)
                _heif_registered = False
        return _heif_registered


def _available_formats() -> tuple[str, ...]:
    heif = heif_supported()
    Image.init()
    return tuple(f for f in _FORMATS if f in Image.OPEN and (heif or f != "HEIF"))


def _unreadable(data: bytes, label: str) -> str:
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS and not heif_supported():
        return (
            f"{label} is a HEIC/HEIF image, which needs the heif extra (pillow-heif) installed; "
            "install moondream-mcp with the heif extra, or convert the image to JPEG."
        )
    return f"{label} is not an image Pillow can read; give a JPEG, PNG, GIF, WebP, HEIC, AVIF, BMP or TIFF image."


def _bomb(label: str, detail: str) -> str:
    return f"refused: {label} is too large to decode safely ({detail}); give a smaller image."
