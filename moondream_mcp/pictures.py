"""Pictures the server hands back (annotated results, zoomed crops, training charts): each kept small enough
for clients that cap images, and saved as a file a person, or any client through its resource, can open.

Pictures go to the data directory's pictures/ folder (the newest KEPT of them are kept) or, when asked,
to a folder inside the allowed directories, through the file guard. Knows nothing of MCP.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .files import FileError, FileGuard
from .images.encode import encode_jpeg

# Base64 characters of one picture: some clients drop images over 1 MB.
BUDGET = 1_000_000
KEPT = 500  # pictures kept in the data directory, newest first
REMEMBERED = 1000  # pictures saved elsewhere whose resource still resolves
_SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png"}
_NAME = re.compile(r"^[a-z]+-\d{8}-\d{6}-[0-9a-f]{8}\.(jpg|png)$")


@dataclass(frozen=True)
class Picture:
    data: bytes
    mime: str  # image/jpeg or image/png
    kind: str  # what it shows, a word that starts its file name: detect, zoom, chart...


@dataclass(frozen=True)
class SavedPicture:
    picture: Picture  # as saved: within BUDGET
    name: str  # unique; the resource's name
    path: Path


def fit(picture: Picture) -> Picture:
    """The picture, re-encoded as a smaller JPEG if its base64 would be over BUDGET."""
    if 4 * -(-len(picture.data) // 3) <= BUDGET:
        return picture
    with Image.open(io.BytesIO(picture.data)) as opened:
        jpeg, _ = encode_jpeg(opened.convert("RGB"), budget=BUDGET)
    return Picture(data=jpeg, mime="image/jpeg", kind=picture.kind)


class PictureShelf:
    """Where pictures are saved and read back by name. Blocking: call it from a worker thread."""

    def __init__(self, folder: Path, files: FileGuard, kept: int = KEPT) -> None:
        self.folder = folder
        self._files = files
        self._kept = kept
        self._elsewhere: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, picture: Picture, save_to: str | None = None) -> SavedPicture:
        """Save `picture` (fitted to BUDGET) in the pictures folder, or in `save_to`, a directory an agent named."""
        picture = fit(picture)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{picture.kind}-{stamp}-{secrets.token_hex(4)}{_SUFFIXES.get(picture.mime, '.jpg')}"
        if save_to is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / name
            _write(path, picture.data)
            self._prune(name)
        else:
            folder = self._files.check_dir(save_to)
            path = self._files.check(str(folder / name), for_writing=True)
            _write(path, picture.data)
            with self._lock:
                self._elsewhere[name] = path
                while len(self._elsewhere) > REMEMBERED:
                    self._elsewhere.popitem(last=False)
        return SavedPicture(picture=picture, name=name, path=path)

    def read(self, name: str) -> tuple[bytes, str]:
        """A saved picture's bytes and media type, by name; FileError when there is no such picture."""
        if not _NAME.match(name):
            raise FileError(f"no picture named {name[:80]!r}")
        mime = "image/png" if name.endswith(".png") else "image/jpeg"
        with self._lock:
            elsewhere = self._elsewhere.get(name)
        if elsewhere is not None:
            # A folder an agent chose: read as any agent-named file, in case it changed since.
            return self._files.read(self._files.inspect(str(elsewhere))), mime
        try:
            with open(self.folder / name, "rb") as file:
                return file.read(2 * BUDGET), mime
        except FileNotFoundError:
            raise FileError(
                f"no picture named {name}; it may have been pruned (the newest {self._kept} are kept)"
            ) from None

    def _prune(self, newest: str) -> None:
        with self._lock:
            try:
                saved = [(e.stat().st_mtime_ns, e.path) for e in os.scandir(self.folder) if _NAME.match(e.name)]
            except OSError:
                return
            # Oldest first; the picture just saved is never among those removed, whatever the clock did.
            older = sorted(item for item in saved if not item[1].endswith(os.sep + newest))
            for _, path in older[: max(0, len(saved) - self._kept)]:
                try:
                    os.unlink(path)
                except OSError:
                    pass  # gone already, or not ours to remove: the next save tries again


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
