"""Image bytes -> the JPEG the model should see: oriented as displayed, flattened onto white, right-sized.

Runs in a worker thread (decoding is CPU-bound). The input is untrusted: the header size is judged
before a single pixel is decoded, and only a short list of raster formats is ever tried.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading

from PIL import ExifTags, Image, UnidentifiedImageError

from .errors import ImageError
from .prepared import MAX_DATA_URL_CHARS, DataURL, PreparedImage

logger = logging.getLogger(__name__)

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


def source_pixel_limit(max_pixels: int, *, draftable: bool) -> int:
    """The largest header size (in pixels) decoded at all."""
    floor = DRAFT_DECODE_PIXEL_FLOOR if draftable else FULL_DECODE_PIXEL_FLOOR
    return max(floor, 4 * max_pixels)


def fit_within(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect and at most max_pixels pixels; never larger than given."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels:  # float rounding, or an extreme aspect pinned at 1 px
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w, h


def prepare(data: bytes, *, max_pixels: int, label: str) -> PreparedImage:
    try:
        with Image.open(io.BytesIO(data), formats=_available_formats()) as image:
            return _prepare_opened(image, max_pixels, label)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(_unreadable(data, label)) from None
    except Image.DecompressionBombError:
        raise ImageError(_bomb(label, "its header claims more pixels than Pillow will decode")) from None
    except MemoryError:
        raise ImageError(f"{label} is too large to decode in memory; give a smaller image.") from None
    except Exception:
        # Third-party decoders raise all sorts on hostile input; none of it is worth more to the agent.
        logger.debug("decoding %s failed", label, exc_info=True)
        raise ImageError(f"{label} could not be decoded: the image data is truncated or corrupt.") from None


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


def _prepare_opened(image: Image.Image, max_pixels: int, label: str) -> PreparedImage:
    width, height = image.size
    draftable = image.format in _DRAFTABLE
    limit = source_pixel_limit(max_pixels, draftable=draftable)
    if width * height > limit:
        raise ImageError(_bomb(label, f"{width}x{height} pixels, over the {limit / 1e6:g} megapixel limit"))

    target = fit_within(width, height, max_pixels)
    if draftable and target != (width, height):
        # Decodes at the smallest 1/2, 1/4, 1/8 scale still at least as large as what is asked for.
        image.draft("RGB", _draft_request(width, height, max_pixels))
        target = fit_within(*image.size, max_pixels)
    orientation = _orientation(image)

    flat = _flatten(_resized(_to_8bit(image), target))
    upright = flat.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else flat
    jpeg, sent = encode_jpeg(upright)
    # Draft mode changed image.size, so the displayed size comes from the header size.
    shown = (height, width) if orientation in _SIDEWAYS else (width, height)
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


def _resized(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    mode = "RGBA" if has_alpha else "RGB"
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
