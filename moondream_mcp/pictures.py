"""Pictures the server hands back (annotated results, zoomed crops, training charts): each kept small enough
for clients that cap images, and saved as a file a person, or any client through its resource, can open.

Pictures go to the data directory's pictures/ folder (the newest KEPT of them are kept) or, when asked,
to a folder inside the allowed directories, through the file guard. Knows nothing of MCP.
"""

from __future__ import annotations

import hashlib
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

from .files import FileError, FileGuard, FileMissing
from .images.encode import encode_jpeg
from .outputs import write_all

# Base64 characters of one picture: some clients drop images over 1 MB.
BUDGET = 1_000_000
FOLDER = "pictures"  # below the data directory
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
    """Where pictures are saved and read back by name. Blocking: call it from a worker thread.

    A picture is only ever written to a file it creates under a fresh name, so saving never replaces
    anything, ours or anyone else's."""

    def __init__(self, files: FileGuard, kept: int = KEPT) -> None:
        self._files = files
        self._kept = kept
        self._elsewhere: OrderedDict[str, tuple[Path, bytes]] = OrderedDict()  # path, digest
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path | None:
        return self._files.own_dir / FOLDER if self._files.own_dir is not None else None

    def save(self, picture: Picture, save_to: str | None = None) -> SavedPicture:
        """Save `picture` (fitted to BUDGET) in the pictures folder, or in `save_to`, a directory an agent named."""
        picture = fit(picture)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{picture.kind}-{stamp}-{secrets.token_hex(4)}{_SUFFIXES.get(picture.mime, '.jpg')}"
        if save_to is None:
            output = self._files.open_own(FOLDER, name)
        else:
            with self._files.open_dir(save_to) as folder:  # refused with the agent's own words if it is not one
                where = folder.path
            output = self._files.open_output(str(where / name))
        with output:
            if not output.created:
                # A fresh random name already taken: whatever holds it stays as it was.
                raise FileError(f"cannot save the picture: {output.label} is already there; try again.")
            try:
                write_all(output, picture.data)
            except BaseException:
                output.discard()
                raise
        if save_to is None:
            self._prune(name)
        else:
            with self._lock:
                self._elsewhere[name] = (output.path, hashlib.sha256(picture.data).digest())
                while len(self._elsewhere) > REMEMBERED:
                    self._elsewhere.popitem(last=False)
        return SavedPicture(picture=picture, name=name, path=output.path)

    def read(self, name: str) -> tuple[bytes, str]:
        """A saved picture's bytes and media type, by name; FileError when there is no such picture."""
        if not _NAME.match(name):
            raise FileError(f"no picture named {name[:80]!r}")
        mime = "image/png" if name.endswith(".png") else "image/jpeg"
        with self._lock:
            elsewhere = self._elsewhere.get(name)
        gone = f"no picture named {name}; it may have been pruned (the newest {self._kept} are kept)"
        try:
            if elsewhere is None:
                opened = self._files.open_own_read(FOLDER, name)
            else:
                # A folder an agent chose: opened as any agent-named file, in case it changed since.
                opened = self._files.open(str(elsewhere[0]))
        except FileMissing:
            raise FileError(gone) from None
        with opened:
            data = opened.read() if opened.stat.st_size <= 2 * BUDGET else b""
        if not data or (elsewhere is not None and hashlib.sha256(data).digest() != elsewhere[1]):
            # Changed since it was saved: what is there now is not a picture of ours to hand out.
            raise FileError(f"no picture named {name}; the file saved under that name was replaced")
        return data, mime

    def _prune(self, newest: str) -> None:
        folder = self.folder
        if folder is None:
            return
        with self._lock:
            try:
                saved = [
                    (e.stat(follow_symlinks=False).st_mtime_ns, e.name)
                    for e in os.scandir(folder)
                    if _NAME.match(e.name) and e.is_file(follow_symlinks=False)
                ]
            except OSError:
                return
            # Oldest first; the picture just saved is never among those removed, whatever the clock did.
            older = sorted(item for item in saved if item[1] != newest)
            for _, name in older[: max(0, len(saved) - self._kept)]:
                try:
                    os.unlink(folder / name)
                except OSError:
                    pass  # gone already, or not ours to remove: the next save tries again
