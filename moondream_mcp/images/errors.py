"""The one error an image reference can raise, and how references are named inside its message."""

from __future__ import annotations

_MAX_LABEL = 160


class ImageError(Exception):
    """A reference that cannot be turned into an image.

    str(e) is a short message safe to show an AI agent: it names the reference and says what to do.
    It never carries file or response content.
    """


def describe(ref: str) -> str:
    """The reference as it may appear in a message: data URLs by their prefix, anything long truncated."""
    if ref[:5].lower() == "data:":
        head, comma, _ = ref[:200].partition(",")
        return (head + "," if comma else head[:40]) + "…"
    # Control characters would let a crafted name forge extra lines in the agent's view of the error.
    printable = "".join(c if c.isprintable() else "?" for c in ref[: _MAX_LABEL + 1])
    return printable if len(printable) <= _MAX_LABEL else printable[: _MAX_LABEL - 1] + "…"
