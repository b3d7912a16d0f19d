"""A video reference -> an open file to decode: local files opened by the file guard, http(s) URLs downloaded
through the image URL guard and byte cap into a file of the server's own, removed afterwards. Either way
every pass reads the descriptor opened once, never the path again."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import BinaryIO

import anyio
import anyio.to_thread

from ..files import FileGuard, OpenFile, OutputFile, describe
from ..images import ImageLoader
from .errors import VideoError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


@dataclass(frozen=True)
class Source:
    """A video file held open, read again for each pass over it (sampling, writing, a sheet), one pass at a time."""

    handle: OpenFile | OutputFile
    label: str
    identity: str  # changes whenever the content may have: a resumed job must be on the same video

    def open(self) -> BinaryIO:
        """A file object over the held descriptor, from its first byte."""
        try:
            file = os.fdopen(os.dup(self.handle.fd), "rb")
        except OSError as exc:
            raise VideoError(f"cannot read {self.label}: {exc.strerror}") from None
        file.seek(0)  # the duplicate shares its offset with the passes before
        return file


@asynccontextmanager
async def video_source(ref: str, files: FileGuard, images: ImageLoader) -> AsyncIterator[Source]:
    """The video `ref` names, open for the duration of the block: an absolute path (or file:// URL) inside the
    allowed directories, or an http(s) URL, downloaded under the data directory."""
    ref = ref.strip()
    match = _SCHEME.match(ref)
    scheme = match.group(1).lower() if match else None
    if scheme in ("http", "https"):
        async with _downloaded(ref, images, files) as source:
            yield source
    elif scheme in (None, "file"):
        opened = await anyio.to_thread.run_sync(files.open, ref)
        with opened:
            yield Source(opened, opened.label, identity=repr(opened.identity))
    else:
        raise VideoError(f"unsupported video reference: {describe(ref)}; give an absolute file path or an http(s) URL.")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@asynccontextmanager
async def _downloaded(url: str, images: ImageLoader, files: FileGuard) -> AsyncIterator[Source]:
    out = await anyio.to_thread.run_sync(files.open_own, "video", "downloads", f"{uuid.uuid4().hex}.download")
    try:

        async def write(chunk: bytes) -> None:
            await anyio.to_thread.run_sync(_write_all, out.fd, chunk)

        await images.download(url, write)
        yield Source(out, describe(url), identity=f"url {url}")
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(out.discard)
