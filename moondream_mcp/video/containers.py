"""The muxer an output video's name asks for; free of PyAV, so the tools can check a name without the extra."""

from __future__ import annotations

from pathlib import Path

from .errors import VideoError

# What the output's name may end in, and the muxer each one means.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def container_for(path: Path) -> str:
    """The muxer for an output path, judged by its suffix."""
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise VideoError(f"cannot write a {path.suffix or 'suffix-less'} video; name the output .mp4, .mov or .mkv.")
    return fmt
