"""A video reference -> a file to decode: local files through the file guard, http(s) URLs downloaded into
the data directory through the image URL guard and byte cap, then removed."""

from __future__ import annotations

import os
import re
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

from ..files import FileGuard, describe
from ..images import ImageLoader
from .errors import VideoError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


@dataclass(frozen=True)
class Source:
    """A video file that passed its checks, reopened for each pass over it (sampling, writing, a sheet)."""

    path: Path
    stat: os.stat_result
    label: str
    identity: str  # changes whenever the content may have: a resumed job must be on the same video

    def open(self) -> BinaryIO:
        """A read handle on the very file that was checked; a file swapped in since is refused."""
        # O_NONBLOCK: a FIFO swapped in must not block the open; O_NOFOLLOW: the path is resolved already.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            raise VideoError(f"cannot open {self.label}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino, st.st_size) != (
            self.stat.st_dev,
            self.stat.st_ino,
            self.stat.st_size,
        ):
            os.close(fd)
            raise VideoError(f"the file changed while it was being read: {self.label}; try again.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")


@asynccontextmanager
async def video_source(ref: str, files: FileGuard, images: ImageLoader, scratch: Path) -> AsyncIterator[Source]:
    """The video `ref` names: an absolute path (or file:// URL) inside the allowed directories, or an
    http(s) URL, downloaded into `scratch` for the duration of the block."""
    ref = ref.strip()
    match = _SCHEME.match(ref)
    scheme = match.group(1).lower() if match else None
    if scheme in ("http", "https"):
        async with _downloaded(ref, images, scratch) as source:
            yield source
    elif scheme in (None, "file"):
        checked = await anyio.to_thread.run_sync(files.inspect, ref)
        yield Source(checked.path, checked.stat, checked.label, identity=repr(checked.identity))
    else:
        raise VideoError(f"unsupported video reference: {describe(ref)}; give an absolute file path or an http(s) URL.")


@asynccontextmanager
async def _downloaded(url: str, images: ImageLoader, scratch: Path) -> AsyncIterator[Source]:
    await anyio.Path(scratch).mkdir(parents=True, exist_ok=True)
    path = scratch / f"{uuid.uuid4().hex}.download"
    try:
        async with await anyio.open_file(path, "wb") as out:

            async def write(chunk: bytes) -> None:
                await out.write(chunk)

            await images.download(url, write)
        st = await anyio.to_thread.run_sync(os.stat, path)
        yield Source(path, st, describe(url), identity=f"url {url}")
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.Path(path).unlink(missing_ok=True)
