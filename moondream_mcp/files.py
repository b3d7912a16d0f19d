"""The file guard: which files an agent may name, for reading or writing, and reading them without surprises.

Every file the server touches on an agent's say-so goes through it: images, datasets, class files,
outputs.

An agent chooses the path, so every rule here assumes the path may be hostile: it may climb out with
`../`, escape through a symlink, aim at secrets in hidden directories, or name something that is not
a file at all (a FIFO that blocks forever, /dev/zero that never ends, a 2 GB sparse file).
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

_MAX_LABEL = 160


class FileError(Exception):
    """A path the server will not, or cannot, read or write.

    str(e) is a short message safe to show an AI agent: it names the path and says what to do.
    It never carries file content.
    """


def describe(ref: str) -> str:
    """A reference as it may appear in a message: data URLs by their prefix, anything long truncated."""
    if ref[:5].lower() == "data:":
        head, comma, _ = ref[:200].partition(",")
        return (head + "," if comma else head[:40]) + "…"
    # Control characters would let a crafted name forge extra lines in the agent's view of the error.
    printable = "".join(c if c.isprintable() else "?" for c in ref[: _MAX_LABEL + 1])
    return printable if len(printable) <= _MAX_LABEL else printable[: _MAX_LABEL - 1] + "…"


# Defence in depth: even when an allowed dir is "/", these hold no data and plenty of traps
# (/proc files claim size 0 yet stream data; /dev has endless and blocking devices).
_SPECIAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))

_ALLOW_MORE = "Set MOONDREAM_MCP_ALLOWED_DIRS to allow more."


@dataclass(frozen=True)
class CheckedFile:
    """A file that passed every check, with the stat taken before it is opened."""

    path: Path
    stat: os.stat_result
    label: str

    @property
    def identity(self) -> tuple[str, int, int, int, int]:
        """Changes whenever the content may have: replaced (inode), rewritten (mtime) or resized."""
        st = self.stat
        return (str(self.path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FileGuard:
    """The allowed directories, and the checks every path an agent names must pass."""

    def __init__(self, allowed_dirs: Sequence[Path], max_file_bytes: int) -> None:
        # Resolved here too, so that containment compares real paths with real paths even when the
        # loader is built by hand rather than from Settings.
        self.allowed_dirs = tuple(Path(os.path.expanduser(d)).resolve() for d in allowed_dirs)
        self.max_file_bytes = max_file_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> FileGuard:
        return cls(list(settings.allowed_dirs), settings.max_file_bytes)

    def check(self, ref: str, *, for_writing: bool = False) -> Path:
        """The real path behind `ref` if an agent may read it (or, for writing, create or replace it)."""
        if for_writing:
            return self._check_for_writing(ref)
        return self.inspect(ref).path

    def check_dir(self, ref: str) -> Path:
        """The real path of a directory inside the allowed dirs, for listing its files."""
        label = describe(ref)
        real = self._resolve(self._to_path(ref, label), label, missing=f"directory not found: {label}")
        self._authorize(real, label)
        if not stat.S_ISDIR(self._stat(real, label).st_mode):
            raise FileError(f"not a directory: {label}")
        return real

    def inspect(self, ref: str) -> CheckedFile:
        label = describe(ref)
        path = self._to_path(ref, label)
        real = self._resolve(path, label)
        self._authorize(real, label)
        st = self._stat(real, label)
        self._require_regular(st, label)
        if st.st_size > self.max_file_bytes:
            raise FileError(self._too_large(label))
        if st.st_size == 0:
            raise FileError(f"the file is empty: {label}")
        return CheckedFile(real, st, label)

    def unchanged(self, ref: str, checked: CheckedFile) -> bool:
        """Whether `ref` names, now as when checked, the very same file, unmodified: one stat, symlinks followed.

        Only for a file read moments ago, whose filesystem answered then: cheap enough to ask on the event loop.
        Same device, inode, mtime and size means the same bytes, which the full checks passed when first read.
        """
        try:
            st = os.stat(self._to_path(ref, checked.label))
        except (OSError, ValueError, FileError):
            return False
        was = checked.stat
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) == (
            was.st_dev,
            was.st_ino,
            was.st_mtime_ns,
            was.st_size,
        )

    def read(self, checked: CheckedFile) -> bytes:
        """The file's bytes, refusing anything that changed into a non-file or grew past the limit."""
        label = checked.label
        # O_NONBLOCK: if a FIFO was swapped in after the stat, opening it must not wait for a writer.
        # O_NOFOLLOW: the checked path is already resolved, so a symlink there now is a swap.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(checked.path, flags)
        except OSError as exc:
            raise FileError(f"cannot open {label}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            self._require_regular(st, label)
            if (st.st_dev, st.st_ino) != (checked.stat.st_dev, checked.stat.st_ino):
                raise FileError(f"the file changed while it was being opened: {label}; try again.")
            chunks: list[bytes] = []
            budget = self.max_file_bytes + 1  # one byte past the limit proves the file is over it
            while budget > 0:
                chunk = os.read(fd, min(budget, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                budget -= len(chunk)
        except OSError as exc:
            raise FileError(f"cannot read {label}: {exc.strerror}") from None
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > self.max_file_bytes:
            raise FileError(self._too_large(label))
        if not data:
            raise FileError(f"the file is empty: {label}")
        return data

    def _check_for_writing(self, ref: str) -> Path:
        label = describe(ref)
        path = self._to_path(ref, label)
        if path.name in ("", ".", ".."):
            raise FileError(f"not a file path: {label}; give the full path of the file to write.")
        missing = f"the directory does not exist: {label}; create it first."
        parent = self._resolve(path.parent, label, missing=missing)
        target = parent / path.name
        if os.path.lexists(target):
            # A symlink (even a dangling one) would redirect the write: judge where it really lands.
            target = target.resolve()
        self._authorize(target, label)
        if os.path.lexists(target):
            self._require_regular(self._stat(target, label), label)
        return target

    def _to_path(self, ref: str, label: str) -> Path:
        text = ref
        if ref[:7].lower() == "file://":
            parts = urllib.parse.urlsplit(ref)
            if parts.netloc not in ("", "localhost"):
                raise FileError(f"the file URL names another host: {label}; only local files can be read.")
            text = urllib.parse.unquote(parts.path)
        if "\x00" in text:
            raise FileError(f"the path contains a NUL character: {label}")
        text = os.path.expanduser(text.strip())
        if not text:
            raise FileError("the path is empty; give an absolute file path.")
        if not os.path.isabs(text):
            example = self.allowed_dirs[0] / text if self.allowed_dirs else Path("/home/me") / text
            raise FileError(f"not an absolute path: {label}; give the full path, e.g. {example}")
        return Path(text)

    def _resolve(self, path: Path, label: str, *, missing: str | None = None) -> Path:
        try:
            return path.resolve(strict=True)
        except FileNotFoundError:
            # Outside the allowed dirs, "not found" would tell an agent which files exist there.
            if not self._lexically_inside(path):
                raise FileError(self._outside(label)) from None
            raise FileError(missing or f"file not found: {label}") from None
        except PermissionError:
            raise FileError(f"cannot access {label}: permission denied") from None
        except (OSError, RuntimeError) as exc:  # symlink loops, a file used as a directory, too long
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "cannot be resolved"
            raise FileError(f"cannot open {label}: {reason}") from None

    def _lexically_inside(self, path: Path) -> bool:
        normal = Path(os.path.normpath(path))
        return any(normal.is_relative_to(d) for d in self.allowed_dirs)

    def _authorize(self, real: Path, label: str) -> None:
        # Deepest first, so a refusal names the hidden part below the most specific allowed dir.
        containing = [d for d in self.allowed_dirs if real.is_relative_to(d)]
        containing.sort(key=lambda d: len(d.parts), reverse=True)
        if not containing:
            raise FileError(self._outside(label))
        if any(real.is_relative_to(root) for root in _SPECIAL_ROOTS):
            raise FileError(f"refused: {label} is on a system filesystem ({real.parts[1]}), not a regular file.")
        # Hidden names are judged only below the allowed dir, so an allowed dir like ~/.cache/pics
        # explicitly opts in to its own hidden ancestors but not to hidden things inside it.
        hidden = [_first_hidden(real.relative_to(d)) for d in containing]
        if all(name is not None for name in hidden):
            raise FileError(
                f"refused: {label} is inside a hidden file or directory ({hidden[0]}), where secrets and "
                "settings are kept. To allow it, add that directory itself to MOONDREAM_MCP_ALLOWED_DIRS."
            )

    def _stat(self, real: Path, label: str) -> os.stat_result:
        try:
            return os.stat(real)
        except OSError as exc:
            raise FileError(f"cannot open {label}: {exc.strerror}") from None

    @staticmethod
    def _require_regular(st: os.stat_result, label: str) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            return
        if stat.S_ISDIR(mode):
            kind = "a directory"
        elif stat.S_ISFIFO(mode):
            kind = "a named pipe (FIFO)"
        elif stat.S_ISSOCK(mode):
            kind = "a socket"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "a device"
        else:
            kind = "not a regular file"
        raise FileError(f"refused: {label} is {kind}; give the path of a regular file.")

    def _outside(self, label: str) -> str:
        allowed = ", ".join(str(d) for d in self.allowed_dirs) or "(none)"
        return f"the file is outside the allowed directories: {label}; allowed: {allowed}. {_ALLOW_MORE}"

    def _too_large(self, label: str) -> str:
        return (
            f"the file is too large: {label} is over the limit of {self.max_file_bytes} bytes; "
            "give a smaller file or raise MOONDREAM_MCP_MAX_FILE_BYTES."
        )


def _first_hidden(relative: Path) -> str | None:
    return next((part for part in relative.parts if part.startswith(".")), None)
