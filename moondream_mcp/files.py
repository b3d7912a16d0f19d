"""The file guard: which files an agent may name, for reading or writing, and opening them without surprises.

Every file the server touches goes through it: images, datasets, class files, image lists, outputs, and
the server's own files under its data directory.

An agent chooses the path, so every rule here assumes the path may be hostile: it may climb out with
`../`, escape through a symlink, aim at secrets in hidden directories, or name something that is not
a file at all (a FIFO that blocks forever, /dev/zero that never ends, a 2 GB sparse file). And the
disk may change while it is being read: a directory may be swapped for a symlink between a check and
an open. So nothing is checked and then opened by name: a path is walked from the root one component
at a time, each directory opened relative to the one before it without following symlinks, each
symlink read and judged by where it really leads, and what is handed out is the open descriptor, so
nothing reopens the path. On Linux the descriptor's path is confirmed once more through /proc, which
also catches a directory renamed out from under the walk.

Refusals give nothing away about the disk outside the allowed directories: whether a path there exists,
is a file or a directory, every answer is the same "outside the allowed directories".
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from .config import Settings

_MAX_LABEL = 160
MAX_LINKS = 40  # symlinks followed for one path, as the kernel's own limit
LIST_SECONDS = 20.0  # longest a listing or glob may take
LIST_ENTRIES = 1_000_000  # most directory entries a listing or glob may look at
LIST_DEPTH = 64  # deepest a `**` glob descends

# POSIX flags; where one is missing (not a POSIX system) the walk, which needs dir_fd, cannot run anyway.
_O = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# O_PATH where there is one: crossing a directory needs only search permission and opens nothing.
_WALK = (getattr(os, "O_PATH", 0) or os.O_RDONLY) | _DIRECTORY | _O
_LIST = os.O_RDONLY | _DIRECTORY | _O
# O_NONBLOCK: a FIFO swapped in after the last look must not wait for a writer.
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | _O
_WRITE = os.O_RDWR | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | _O
# What open() answers when the name it was given is, after all, a symlink (or stopped being a directory).
_SWAPPED = (errno.ELOOP, errno.ENOTDIR)


class FileError(Exception):
    """A path the server will not, or cannot, read or write.

    str(e) is a short message safe to show an AI agent: it names the path and says what to do.
    It never carries file content.
    """


def os_failure(verb: str, label: str, exc: OSError) -> FileError:
    """The one way an operating-system failure on a file is told: "cannot write out.jsonl: No space left on
    device" (the reason as the system gives it, never the file's content)."""
    return FileError(f"cannot {verb} {label}: {exc.strerror or exc}")


class FileMissing(FileError):
    """The path does not exist, inside the allowed directories (outside, that is never said)."""


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


class _Handle:
    fd: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A handle dropped unclosed (its opener cancelled while a worker thread still ran) still lets go.
        try:
            self.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(eq=False)
class OpenFile(_Handle):
    """A regular file the guard opened for reading: the descriptor, its real path and its stat."""

    fd: int
    path: Path
    stat: os.stat_result
    label: str
    limit: int

    @property
    def identity(self) -> tuple[str, int, int, int, int]:
        """Changes whenever the content may have: replaced (inode), rewritten (mtime) or resized."""
        st = self.stat
        return (str(self.path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> bytes:
        """Every byte, refusing a file that grew past the limit since it was opened."""
        chunks: list[bytes] = []
        budget = self.limit + 1  # one byte past the limit proves the file is over it
        offset = 0
        try:
            while budget > 0:
                chunk = os.pread(self.fd, min(budget, 1 << 20), offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
                budget -= len(chunk)
        except OSError as exc:
            raise os_failure("read", self.label, exc) from None
        if offset > self.limit:
            raise FileError(_too_large(self.label, self.limit))
        return b"".join(chunks)


@dataclass(eq=False)
class OpenDir(_Handle):
    """A directory the guard opened, for listing it and opening what is below it.

    What is directly in it is reached by name through its descriptor, never following a symlink: a folder
    the server writes into (an export) cannot be redirected elsewhere by a link put inside it.
    """

    fd: int
    path: Path
    label: str

    def names(self) -> list[str]:
        """Every entry's name, hidden ones too."""
        return os.listdir(self.fd)

    def has(self, name: str) -> bool:
        """Whether anything (a file, a folder, a symlink, even a dangling one) is there by that name."""
        try:
            os.stat(_plain(name, self), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_failure("look at", self._label(name), exc) from None
        return True

    def child(self, name: str, *, create: bool = False) -> OpenDir:
        """The folder `name` in this one (made first if `create`); a symlink or a file there is refused."""
        label = self._label(name)
        if create:
            try:
                os.mkdir(_plain(name, self), 0o777, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise os_failure("create", label, exc) from None
        try:
            fd = os.open(_plain(name, self), _LIST, dir_fd=self.fd)
        except FileNotFoundError:
            raise FileMissing(f"directory not found: {label}") from None
        except OSError as exc:
            if exc.errno in _SWAPPED:
                raise FileError(f"refused: {label} is not a folder (a file or a symlink is there)") from None
            raise os_failure("open", label, exc) from None
        return OpenDir(fd, self.path / name, label)

    def create(self, name: str) -> OutputFile:
        """A new file `name` in this folder, for writing; FileError if anything is there by that name already."""
        label = self._label(name)
        try:
            fd = os.open(_plain(name, self), _WRITE | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=self.fd)
        except FileExistsError:
            raise FileError(f"refused to write {label}: something is there already") from None
        except OSError as exc:
            raise os_failure("write", label, exc) from None
        return OutputFile(fd, self.path / name, label, True, os.dup(self.fd), name)

    def link(self, name: str, target: Path) -> None:
        """A new symlink `name` in this folder, to `target`; FileError if anything is there by that name."""
        try:
            os.symlink(target, _plain(name, self), dir_fd=self.fd)
        except OSError as exc:
            raise os_failure("write", self._label(name), exc) from None

    def remove(self, name: str) -> bool:
        """Remove the file or symlink `name` (never what a symlink leads to); False when there is none.
        A folder there is left as it is (False)."""
        try:
            st = os.stat(_plain(name, self), dir_fd=self.fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                return False
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_failure("remove", self._label(name), exc) from None
        return True

    def _label(self, name: str) -> str:
        return describe(str(self.path / name))


@dataclass(eq=False)
class OutputFile(_Handle):
    """A regular file the guard opened for writing (read-write, not truncated): new, or one that was there.

    Whoever writes decides, from what is already in it, whether it may be written at all (jsonl.py).
    """

    fd: int
    path: Path
    label: str
    created: bool  # made by this open: nothing of anyone else's is in it
    _parent: int = field(repr=False)  # the directory holding it, to remove it by name if need be
    _name: str = field(repr=False)

    @property
    def identity(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino)

    def head(self, size: int) -> bytes:
        return os.pread(self.fd, size, 0)

    def replace(self, name: str, *, expected: os.stat_result | None = None) -> None:
        """Move this file over `name` in its own folder, in one step: a reader sees the old file or the new,
        never half of one. With `expected`, only if `name` still holds that file, unchanged since it was
        read (same inode, size and time); else FileError, and nothing moved."""
        label = describe(str(self.path.with_name(name)))
        try:
            if expected is not None:
                try:
                    there: os.stat_result | None = os.stat(name, dir_fd=self._parent, follow_symlinks=False)
                except FileNotFoundError:
                    there = None
                if there is None or _version(there) != _version(expected):
                    raise FileError(f"{label} changed while it was being rewritten; nothing was written, try again.")
            os.replace(self._name, name, src_dir_fd=self._parent, dst_dir_fd=self._parent)
        except OSError as exc:
            raise os_failure("write", label, exc) from None
        self._name, self.path, self.label, self.created = name, self.path.with_name(name), label, False

    def discard(self) -> None:
        """Close, and remove the file if this open created it (and the name still holds it)."""
        try:
            if self.created and self.fd >= 0:
                mine = os.fstat(self.fd)
                try:
                    there = os.stat(self._name, dir_fd=self._parent, follow_symlinks=False)
                except OSError:
                    there = None
                if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(self._name, dir_fd=self._parent)
        finally:
            self.close()

    def close(self) -> None:
        super().close()
        if self._parent >= 0:
            os.close(self._parent)
            self._parent = -1


@dataclass
class _Budget:
    label: str
    links: int = 0

    def spend(self, guard: FileGuard, where: Path) -> None:
        self.links += 1
        if self.links > MAX_LINKS:
            raise guard._failure(OSError(errno.ELOOP, os.strerror(errno.ELOOP)), where, self.label, self.label)


class FileGuard:
    """The allowed directories, the rules every path an agent names must pass, and race-free opening."""

    def __init__(self, allowed_dirs: Sequence[Path], max_file_bytes: int, own_dir: Path | None = None) -> None:
        # Resolved here too, so that containment compares real paths with real paths even when the
        # guard is built by hand rather than from Settings.
        self.allowed_dirs = tuple(Path(os.path.expanduser(d)).resolve() for d in allowed_dirs)
        self.max_file_bytes = max_file_bytes
        self.own_dir = own_dir
        self._configured = self.allowed_dirs
        self._extra: dict[Hashable, tuple[Path, ...]] = {}
        self._extra_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> FileGuard:
        return cls(list(settings.allowed_dirs), settings.max_file_bytes, settings.data_dir)

    def set_extra_dirs(self, owner: Hashable, dirs: Iterable[Path]) -> None:
        """Allow `dirs` too, on behalf of `owner` (a client that offered them), replacing what that owner
        offered before; the configured directories always stay. An empty `dirs` withdraws the owner's."""
        resolved = tuple(Path(os.path.expanduser(d)).resolve() for d in dirs)
        with self._extra_lock:
            if resolved:
                self._extra[owner] = resolved
            else:
                self._extra.pop(owner, None)
            extra = (d for ds in self._extra.values() for d in ds)
            # One assignment: a rule applied meanwhile sees the old tuple or the new one, never a mixture;
            # and every open is judged again on its descriptor (_confirm), so a withdrawn root refuses.
            self.allowed_dirs = tuple(dict.fromkeys([*self._configured, *extra]))

    # ---- reading ------------------------------------------------------------------------------

    def open(self, ref: str, *, allow_empty: bool = False) -> OpenFile:
        """The regular file `ref` names, opened for reading, if an agent may read it."""
        label = describe(ref)
        path = self._to_path(ref, label)
        budget = _Budget(label)
        while True:
            parent, real, name = self._find_file(path, label, budget)
            try:
                fd = os.open(name, _READ, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in _SWAPPED:
                    raise self._failure(exc, real, label, f"file not found: {label}") from None
                budget.spend(self, real)
                path = real  # it became a symlink since the look: look again
                continue
            finally:
                os.close(parent)
            return self._opened(fd, real, label, allow_empty)

    def _find_file(self, path: Path, label: str, budget: _Budget) -> tuple[int, Path, str]:
        """Walk to a regular file an agent may read: its directory's descriptor, its real path and name."""
        missing = f"file not found: {label}"
        while True:
            parent, where, name = self._walk(path, label, budget, missing)
            try:
                if name == ".":
                    self._authorize(where, label)
                    raise FileError(f"refused: {label} is a directory; give the path of a regular file.")
                real = where / name
                st = self._lstat(parent, name, real, label, missing)
                if stat.S_ISLNK(st.st_mode):
                    path = self._follow(parent, name, where, real, budget)
                    os.close(parent)
                    continue
                self._authorize(real, label)
                _require_regular(st, label)  # before opening: a device or FIFO is never opened at all
            except BaseException:
                os.close(parent)
                raise
            return parent, real, name

    def unchanged(self, ref: str, identity: tuple[str, int, int, int, int]) -> bool:
        """Whether `ref` still names the very file `identity` (OpenFile.identity) was taken from, unmodified and
        still allowed: one stat, symlinks followed. Only for a file opened moments ago, whose filesystem answered
        then: cheap enough to ask on the event loop. The same device, inode, mtime and size is the same bytes,
        which the full checks passed when the file was opened."""
        real, dev, ino, mtime_ns, size = identity
        try:
            st = os.stat(self._to_path(ref, ""))
        except (OSError, ValueError, FileError):
            return False
        same = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) == (dev, ino, mtime_ns, size)
        # Asked again: the allowed directories may have shrunk since (client roots come and go).
        return same and self._refusal(Path(real), "") is None

    def open_dir(self, ref: str) -> OpenDir:
        """The directory `ref` names, opened for listing, if it is inside the allowed dirs."""
        label = describe(ref)
        return self._open_dir(self._to_path(ref, label), label)

    def _open_dir(self, path: Path, label: str) -> OpenDir:
        budget = _Budget(label)
        missing = f"directory not found: {label}"
        while True:
            parent, where, name = self._walk(path, label, budget, missing)
            try:
                real = where if name == "." else where / name
                if name != ".":
                    st = self._lstat(parent, name, real, label, missing)
                    if stat.S_ISLNK(st.st_mode):
                        path = self._follow(parent, name, where, real, budget)
                        continue
                self._authorize(real, label)
                if name != "." and not stat.S_ISDIR(st.st_mode):
                    raise FileError(f"not a directory: {label}")
                try:
                    fd = os.open(name, _LIST, dir_fd=parent)
                except OSError as exc:
                    if exc.errno not in _SWAPPED:
                        raise self._failure(exc, real, label, missing) from None
                    budget.spend(self, real)
                    path = real
                    continue
            finally:
                os.close(parent)
            try:
                self._confirm(fd, label)
            except BaseException:
                os.close(fd)
                raise
            return OpenDir(fd, real, label)

    # ---- writing ------------------------------------------------------------------------------

    def open_output(self, ref: str) -> OutputFile:
        """The file `ref` names, created or opened (not truncated) for writing, if an agent may write it."""
        label = describe(ref)
        path = self._to_path(ref, label)
        if path.name in ("", ".", ".."):
            raise FileError(f"not a file path: {label}; give the full path of the file to write.")
        budget = _Budget(label)
        missing = f"the directory does not exist: {label}; create it first."
        while True:
            parent, where, name = self._walk(path, label, budget, missing)
            try:
                if name == ".":
                    raise FileError(f"not a file path: {label}; give the full path of the file to write.")
                real = where / name
                st = self._lstat_if_any(parent, name, real, label, missing)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    # Even a dangling symlink would redirect the write: judge where it really lands.
                    path = self._follow(parent, name, where, real, budget)
                    continue
                self._authorize(real, label)
                if st is not None:
                    _require_regular(st, label)  # never open a FIFO or a device, even to refuse it
                opened = self._open_for_writing(parent, name, real, label, judge=True)
                if opened is None:
                    budget.spend(self, real)
                    continue
                return opened
            finally:
                os.close(parent)

    def make_dir(self, ref: str) -> OpenDir:
        """The directory `ref` names, made first when it is not there (its parent must be), opened."""
        label = describe(ref)
        path = self._to_path(ref, label)
        budget = _Budget(label)
        missing = f"the directory does not exist: {label}; create its parent first."
        while True:
            parent, where, name = self._walk(path, label, budget, missing)
            try:
                if name == ".":
                    return self._open_dir(where, label)
                real = where / name
                st = self._lstat_if_any(parent, name, real, label, missing)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    path = self._follow(parent, name, where, real, budget)
                    continue
                self._authorize(real, label)
                if st is None:
                    try:
                        os.mkdir(name, 0o777, dir_fd=parent)
                    except FileExistsError:
                        pass  # made meanwhile: opened below like any other
                    except OSError as exc:
                        raise self._failure(exc, real, label, missing, writing=True) from None
            finally:
                os.close(parent)
            return self._open_dir(real, label)

    def open_own(self, *parts: str) -> OutputFile:
        """A file of the server's own below its data directory (folders made as needed), for writing.

        Only for names the server chooses: nothing an agent says reaches here. No symlink is followed
        below the data directory: the server never makes one there.
        """
        if self.own_dir is None:
            raise FileError("this server has no data directory to write to")
        label = describe(str(self.own_dir.joinpath(*parts)))
        real = self.own_dir.resolve()
        try:
            self.own_dir.mkdir(parents=True, exist_ok=True)
            # The data directory itself is the operator's choice: a symlink there is theirs to make.
            parent = os.open(self.own_dir, _WALK & ~getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise os_failure("write", label, exc) from None
        try:
            for name in parts[:-1]:
                try:
                    os.mkdir(name, 0o700, dir_fd=parent)
                except FileExistsError:
                    pass
                below = os.open(name, _WALK, dir_fd=parent)
                os.close(parent)
                parent, real = below, real / name
            for _ in range(MAX_LINKS):
                opened = self._open_for_writing(parent, parts[-1], real / parts[-1], label, judge=False)
                if opened is not None:
                    return opened
            raise FileError(f"cannot write {label}: it keeps changing while it is being opened")
        except OSError as exc:
            raise os_failure("write", label, exc) from None
        finally:
            os.close(parent)

    def open_own_read(self, *parts: str) -> OpenFile:
        """A file of the server's own below its data directory, for reading; as open_own, only for names
        the server chooses, and no symlink followed below the data directory. FileMissing if it is not there."""
        if self.own_dir is None:
            raise FileMissing("this server has no data directory")
        label = describe(str(self.own_dir.joinpath(*parts)))
        real = self.own_dir.resolve().joinpath(*parts)
        fd = -1
        try:
            parent = os.open(self.own_dir, _WALK & ~getattr(os, "O_NOFOLLOW", 0))
            try:
                for name in parts[:-1]:
                    below = os.open(name, _WALK, dir_fd=parent)
                    os.close(parent)
                    parent = below
                fd = os.open(parts[-1], _READ, dir_fd=parent)
            finally:
                os.close(parent)
            st = os.fstat(fd)
            _require_regular(st, label)
            if st.st_size > self.max_file_bytes:
                raise FileError(_too_large(label, self.max_file_bytes))
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
            if isinstance(exc, FileNotFoundError):
                raise FileMissing(f"file not found: {label}") from None
            if isinstance(exc, OSError):
                raise os_failure("open", label, exc) from None
            raise
        return OpenFile(fd, real, st, label, self.max_file_bytes)

    def _open_for_writing(self, parent: int, name: str, real: Path, label: str, *, judge: bool) -> OutputFile | None:
        """Create `name` in `parent`, or open it if it is there; None when it changed under us (look again)."""
        created = True
        try:
            fd = os.open(name, _WRITE | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=parent)
        except FileExistsError:
            created = False
            try:
                fd = os.open(name, _WRITE, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (*_SWAPPED, errno.ENOENT):
                    return None
                raise self._failure(exc, real, label, label, writing=True, judge=judge) from None
        except OSError as exc:
            raise self._failure(exc, real, label, label, writing=True, judge=judge) from None
        opened = OutputFile(fd, real, label, created, os.dup(parent), name)
        try:
            _require_regular(os.fstat(fd), label)
            if judge:
                self._confirm(fd, label)
        except BaseException:
            opened.discard()
            raise
        return opened

    # ---- listing ------------------------------------------------------------------------------

    def glob(
        self,
        pattern: str,
        *,
        accept: Callable[[str], bool] = lambda name: True,
        limit: int = 100_000,
        seconds: float | None = None,
    ) -> list[Path]:
        """Files matching a glob (`*`, `?`, `[...]` per component, `**` for any depth), or every file of a
        directory when `pattern` has no magic, whose names `accept` takes: at most `limit` + 1, sorted."""
        label = describe(pattern)
        path = self._to_path(pattern, label)
        parts = path.parts
        fixed = next((i for i, part in enumerate(parts) if _magic(part)), len(parts))
        with self._open_dir(Path(*parts[:fixed]), label) as top:
            rest = list(parts[fixed:]) or ["*"]
            return sorted(self.find(top, rest, accept=accept, limit=limit, seconds=seconds))

    def find(
        self,
        top: OpenDir,
        pattern: Sequence[str],
        *,
        accept: Callable[[str], bool] = lambda name: True,
        limit: int = 100_000,
        seconds: float | None = None,
    ) -> list[Path]:
        """Files below `top` matching `pattern` (its components, `**` any depth), at most `limit` + 1.

        Hidden names are skipped; a symlink is taken only where it leads inside the allowed dirs, and
        a directory is entered once however many links reach it, so link loops end at once. Bounded in
        entries looked at and in time: a FileError says to narrow the pattern.
        """
        rest = tuple(pattern) + (("*",) if pattern and pattern[-1] == "**" else ())
        return _Finder(self, top.label, accept, limit, LIST_SECONDS if seconds is None else seconds).run(top, rest)

    # ---- the walk -----------------------------------------------------------------------------

    def _walk(self, path: Path, label: str, budget: _Budget, missing: str) -> tuple[int, Path, str]:
        """Cross every component of `path` but the last, from the root: a descriptor of the directory
        reached, its real path, and the last name ("." when the path ends at that directory)."""
        names = deque(path.parts[1:])
        last = names.pop() if names else "."
        if last == "..":
            names.append("..")
            last = "."
        fd = os.open("/", _WALK)
        where = Path("/")
        try:
            while names:
                name = names.popleft()
                if name == "..":
                    above = os.open("..", _WALK, dir_fd=fd)
                    os.close(fd)
                    fd, where = above, where.parent
                    continue
                st = self._lstat(fd, name, where / name, label, missing)
                if stat.S_ISLNK(st.st_mode):
                    target = self._follow(fd, name, Path("."), where / name, budget)
                    if target.is_absolute():
                        root = os.open("/", _WALK)
                        os.close(fd)
                        fd, where = root, Path("/")
                    names.extendleft(reversed(target.parts[1:] if target.is_absolute() else target.parts))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    not_dir = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
                    raise self._failure(not_dir, where / name, label, missing)
                try:
                    below = os.open(name, _WALK, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in _SWAPPED:
                        raise self._failure(exc, where / name, label, missing) from None
                    budget.spend(self, where / name)
                    names.appendleft(name)  # it changed since the look: look again
                    continue
                os.close(fd)
                fd, where = below, where / name
            return fd, where, last
        except BaseException:
            os.close(fd)
            raise

    def _lstat(self, parent: int, name: str, real: Path, label: str, missing: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise self._failure(exc, real, label, missing) from None

    def _lstat_if_any(self, parent: int, name: str, real: Path, label: str, missing: str) -> os.stat_result | None:
        """As _lstat, but None when nothing is there (a file or folder about to be made)."""
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failure(exc, real, label, missing) from None

    def _follow(self, parent: int, name: str, where: Path, real: Path, budget: _Budget) -> Path:
        """The path the symlink `name` stands for, from `where`: walked again, every rule applies to it."""
        budget.spend(self, real)
        try:
            target = os.readlink(name, dir_fd=parent)
        except OSError as exc:
            raise self._failure(exc, real, budget.label, f"file not found: {budget.label}") from None
        return where / target  # `where` is real, so a ".." in the target means what the kernel would

    def _opened(self, fd: int, real: Path, label: str, allow_empty: bool) -> OpenFile:
        try:
            st = os.fstat(fd)
            _require_regular(st, label)
            self._confirm(fd, label)
            if st.st_size > self.max_file_bytes:
                raise FileError(_too_large(label, self.max_file_bytes))
            if st.st_size == 0 and not allow_empty:
                raise FileError(f"the file is empty: {label}")
        except BaseException:
            os.close(fd)
            raise
        return OpenFile(fd, real, st, label, self.max_file_bytes)

    def _confirm(self, fd: int, label: str) -> None:
        """Where the descriptor really is, as the kernel says, must pass the rules too. Catches a directory
        renamed out of the allowed dirs while the walk held it."""
        try:
            actual = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return  # no /proc here: the walk alone stands
        if actual.startswith("/") and self._refusal(Path(actual), label) is not None:
            raise FileError(f"the file moved while it was being opened: {label}; try again.")

    # ---- the rules ----------------------------------------------------------------------------

    def _refusal(self, real: Path, label: str) -> str | None:
        """Why `real` (a path with no symlink in it) may not be touched; None when it may."""
        # Deepest first, so a refusal names the hidden part below the most specific allowed dir.
        containing = [d for d in self.allowed_dirs if real.is_relative_to(d)]
        containing.sort(key=lambda d: len(d.parts), reverse=True)
        if not containing:
            return self._outside(label)
        if any(real.is_relative_to(root) for root in _SPECIAL_ROOTS):
            return f"refused: {label} is on a system filesystem ({real.parts[1]}), not a regular file."
        # Hidden names are judged only below the allowed dir, so an allowed dir like ~/.cache/pics
        # explicitly opts in to its own hidden ancestors but not to hidden things inside it.
        hidden = [_first_hidden(real.relative_to(d)) for d in containing]
        if all(name is not None for name in hidden):
            return (
                f"refused: {label} is inside a hidden file or directory ({hidden[0]}), where secrets and "
                "settings are kept. To allow it, add that directory itself to MOONDREAM_MCP_ALLOWED_DIRS."
            )
        return None

    def _authorize(self, real: Path, label: str) -> None:
        if (refusal := self._refusal(real, label)) is not None:
            raise FileError(refusal)

    def _failure(
        self, exc: OSError, real: Path, label: str, missing: str, *, writing: bool = False, judge: bool = True
    ) -> FileError:
        """The error for a failed look at `real`: a refusal if it may not be touched at all, whatever the
        failure (so nothing is learnt about the disk outside), else what went wrong."""
        if judge and (refusal := self._refusal(real, label)) is not None:
            return FileError(refusal)
        if exc.errno == errno.ENOENT and not writing:
            return FileMissing(missing)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return FileError(f"cannot {'write' if writing else 'access'} {label}: permission denied")
        reason = exc.strerror or "cannot be resolved"
        return FileError(f"cannot {'write' if writing else 'open'} {label}: {reason}")

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

    def _outside(self, label: str) -> str:
        allowed = ", ".join(str(d) for d in self.allowed_dirs) or "(none)"
        return f"the file is outside the allowed directories: {label}; allowed: {allowed}. {_ALLOW_MORE}"


class _Finder:
    """One bounded walk of `FileGuard.find`."""

    def __init__(self, guard: FileGuard, label: str, accept: Callable[[str], bool], limit: int, seconds: float) -> None:
        self.guard = guard
        self.label = label
        self.accept = accept
        self.limit = limit
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.most_entries = LIST_ENTRIES
        self.entries = 0
        self.found: list[Path] = []
        self.seen: set[tuple[int, int, int]] = set()

    def run(self, top: OpenDir, pattern: tuple[str, ...]) -> list[Path]:
        self._visit(top.fd, top.path, pattern, 0)
        return self.found

    def _full(self) -> bool:
        return len(self.found) > self.limit

    def _visit(self, fd: int, where: Path, pattern: tuple[str, ...], depth: int) -> None:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, len(pattern))
        if key in self.seen or self._full():
            return  # a loop, or a directory already reached by another link
        self.seen.add(key)
        head, rest = pattern[0], pattern[1:]
        if head == "**":
            self._visit(fd, where, rest, depth)  # `**` matching no directory at all
            for name, kind in self._entries(fd):
                if kind != "file":
                    self._enter(fd, where, name, kind, pattern, depth)
            return
        for name, kind in self._entries(fd):
            if not _matches(name, head):
                continue
            if rest:
                if kind != "file":
                    self._enter(fd, where, name, kind, rest, depth)
            elif kind != "dir" and self.accept(name) and self._readable(fd, where, name, kind):
                self.found.append(where / name)
                if self._full():
                    return

    def _entries(self, fd: int) -> list[tuple[str, str]]:
        """(name, "file" | "dir" | "link" | "other") of each entry not hidden."""
        listed: list[tuple[str, str]] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                self.entries += 1
                if self.entries > self.most_entries:
                    raise FileError(
                        f"{self.label} covers more than {self.most_entries} directory entries; name a narrower "
                        "directory or pattern."
                    )
                if self.entries % 1000 == 0:
                    self._in_time()
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    kind = "link"
                elif entry.is_dir(follow_symlinks=False):
                    kind = "dir"
                elif entry.is_file(follow_symlinks=False):
                    kind = "file"
                else:
                    kind = "other"
                listed.append((entry.name, kind))
        self._in_time()
        return sorted(listed)  # a directory reached by two names is listed under the first, every time

    def _in_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise FileError(
                f"listing {self.label} took longer than {self.seconds:g} s; name a narrower directory or pattern."
            )

    def _enter(self, fd: int, where: Path, name: str, kind: str, pattern: tuple[str, ...], depth: int) -> None:
        if depth >= LIST_DEPTH:
            raise FileError(f"{self.label} reaches more than {LIST_DEPTH} directories deep; name a narrower pattern.")
        if self.guard._refusal(where / name, name) is not None:
            return
        try:
            if kind == "link":
                opened = self.guard._open_dir(where / name, describe(str(where / name)))
                below, real = opened.fd, where / name
            elif kind == "dir":
                below, real = os.open(name, _LIST, dir_fd=fd), where / name
            else:
                return
        except (FileError, OSError):
            return  # refused, gone, or not a directory after all: not part of the listing
        try:
            self._visit(below, real, pattern, depth + 1)
        finally:
            os.close(below)

    def _readable(self, fd: int, where: Path, name: str, kind: str) -> bool:
        """A listed name is kept only if the guard would open it: nothing outside the allowed dirs is named."""
        if kind == "file":
            return self.guard._refusal(where / name, name) is None
        if kind != "link":
            return False
        try:
            self.guard.open(str(where / name), allow_empty=True).close()
        except FileError:
            return False
        return True


def _magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _matches(name: str, pattern: str) -> bool:
    return name == pattern if not _magic(pattern) else fnmatch.fnmatchcase(name, pattern)


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


def _too_large(label: str, limit: int) -> str:
    return (
        f"the file is too large: {label} is over the limit of {limit} bytes; "
        "give a smaller file or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )


def _plain(name: str, folder: OpenDir) -> str:
    """`name` if it names an entry of the folder itself: one component, not `.` or `..`."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name or (os.sep != "/" and os.sep in name):
        raise FileError(f"not a name in {folder.label}: {describe(name)}")
    return name


def _version(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _first_hidden(relative: Path) -> str | None:
    return next((part for part in relative.parts if part.startswith(".")), None)
