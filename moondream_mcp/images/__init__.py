"""Any image reference -> an oriented, flattened, right-sized JPEG data URL, plus the original size.

    loader.py     ImageLoader: dispatch by kind of reference, and a small cache
    fetch.py      http(s) downloads with vetted addresses, a byte cap and a time cap
    data_urls.py  data:image/...;base64 references
    encode.py     decode, orient, flatten, downscale, encode (Pillow)
    prepared.py   PreparedImage, what encode.py yields
    crops.py      regions of the original image at up to full resolution
    budget.py     MemoryBudget: the memory every image in flight shares
    errors.py     ImageError, whose message is meant for the agent

Local files are read through the file guard (files.py). Knows nothing of MCP.
"""

from .crops import Cutout, Cutouts
from .errors import ImageError
from .loader import ImageLoader, Source
from .prepared import IMAGE_SUFFIXES, PreparedImage, is_image_name

__all__ = [
    "IMAGE_SUFFIXES",
    "Cutout",
    "Cutouts",
    "ImageError",
    "ImageLoader",
    "PreparedImage",
    "Source",
    "is_image_name",
]
