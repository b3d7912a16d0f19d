"""Looking at an uploaded image: its decoded scene, cached by the image's digest."""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import anyio.to_thread
from PIL import Image, UnidentifiedImageError

from ..errors import ApiError
from .vision import ANALYSIS_SIDE, Region, Scene, analyse, colour_in

_SCENES: OrderedDict[bytes, Scene] = OrderedDict()
_SCENES_LOCK = threading.Lock()
_SCENES_KEPT = 32  # benchmarks and training loops send one image over and over; analysing it once is enough


@dataclass(frozen=True)
class Sight:
    """What one image shows, and its SHA-256 digest (what the model's systematic errors derive from)."""

    digest: bytes
    scene: Scene


def sight_of(data: bytes) -> Sight:
    digest = hashlib.sha256(data).digest()
    with _SCENES_LOCK:
        if digest in _SCENES:
            _SCENES.move_to_end(digest)
            return Sight(digest, _SCENES[digest])
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("RGB", (ANALYSIS_SIDE, ANALYSIS_SIDE))  # JPEG only: decode at a reduced scale
            image.load()
            scene = replace(analyse(image), width=size[0], height=size[1])
    except Image.DecompressionBombError:
        raise ApiError(400, "image has too many pixels", param="image_url", code="invalid_image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ApiError(400, "undecodable image", param="image_url", code="invalid_image") from None
    with _SCENES_LOCK:
        _SCENES[digest] = scene
        while len(_SCENES) > _SCENES_KEPT:
            _SCENES.popitem(last=False)
    return Sight(digest, scene)


async def look(data: bytes) -> Sight:
    # Decoding a large image takes tens of milliseconds: off the event loop, so other requests go on.
    return await anyio.to_thread.run_sync(sight_of, data)


def matching(scene: Scene, object_text: str) -> list[Region]:
    """The regions an object description names by colour ("the red car"), largest first."""
    colour = colour_in(object_text)
    return scene.of_colour(colour) if colour else []
