"""Whole files the server writes (datasets rewritten in place, pictures, exports), every byte through a
handle the file guard opened. A file replaced is written beside its target under a temporary name and
renamed over it through the folder's descriptor, so a reader or a crash never sees half a file."""

from __future__ import annotations

import os
import secrets
import stat

from .files import FileGuard, OpenDir, OpenFile, OutputFile, os_failure


def write_all(output: OutputFile, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(output.fd, view) :]
    except OSError as exc:
        raise os_failure("write", output.label, exc) from None


def write_new(folder: OpenDir, name: str, data: bytes) -> None:
    """A new file `name` in `folder`: refused (FileError) if anything is there by that name."""
    output = folder.create(name)
    try:
        write_all(output, data)
    except BaseException:
        output.discard()
        raise
    output.close()


def _temporary(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.tmp"


def _swap(output: OutputFile, data: bytes, name: str, expected: os.stat_result | None) -> None:
    try:
        write_all(output, data)
        os.fsync(output.fd)
        output.replace(name, expected=expected)
    except BaseException:
        output.discard()  # still the temporary: removed, the target left as it was
        raise
    output.close()


def write_over(folder: OpenDir, name: str, data: bytes, *, expected: os.stat_result | None = None) -> None:
    """`data` as the file `name` in `folder`, in place of what is there, in one step (OutputFile.replace:
    with `expected`, only if that file is still there unchanged)."""
    output = folder.create(_temporary(name))
    if expected is not None:
        try:
            os.fchmod(output.fd, stat.S_IMODE(expected.st_mode))
        except OSError:
            pass  # a filesystem without modes: the umask's default stands
    _swap(output, data, name, expected)


def rewrite(files: FileGuard, opened: OpenFile, data: bytes) -> None:
    """Replace the file `opened` was read from with `data`, in one step, keeping its permissions. Refused
    (FileError, the file left as it was) if it was replaced or changed since it was opened: the one way a
    file an agent named is rewritten in place."""
    with files.open_dir(str(opened.path.parent)) as folder:
        write_over(folder, opened.path.name, data, expected=opened.stat)


def save_own(files: FileGuard, folder: str, name: str, data: bytes) -> OutputFile:
    """`data` as the server's own file `folder`/`name` below its data directory (`folder` may be nested:
    "video/sheets", or empty: the data directory itself), replacing any earlier one in one step. Returns the
    (closed) handle, whose path is where it went."""
    output = files.open_own(*(part for part in folder.split("/") if part), _temporary(name))
    _swap(output, data, name, None)
    return output
