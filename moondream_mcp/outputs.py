"""Files the server writes whole (pictures, exports): written beside the target under a temporary name
and renamed over it, so a reader or a crash never sees half a file. The caller has passed the target
through the file guard (FileGuard.check(..., for_writing=True)) and decided it may be replaced."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as out:
            out.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
