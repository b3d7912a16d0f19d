"""Where each member of a JSON object, or item of a JSON array, sits in the text it came in.

The tuning API wants rollouts sent back to train_step exactly as it sent them; slicing the original
text keeps every byte (number formatting, key order) instead of trusting a parse/serialize round trip.
"""

from __future__ import annotations

import json

_decoder = json.JSONDecoder()
_WS = " \t\n\r"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _expect(text: str, i: int, char: str) -> int:
    i = _skip(text, i)
    if i >= len(text) or text[i] != char:
        raise ValueError(f"expected {char!r} at offset {i}")
    return i + 1


def members(text: str, start: int = 0) -> dict[str, tuple[int, int]]:
    """The (start, end) span of each top-level member's value in the object at `start`."""
    spans: dict[str, tuple[int, int]] = {}
    i = _expect(text, start, "{")
    i = _skip(text, i)
    if text[i] == "}":
        return spans
    while True:
        key, i = _decoder.raw_decode(text, _skip(text, i))
        i = _skip(text, _expect(text, i, ":"))
        _, end = _decoder.raw_decode(text, i)
        spans[key] = (i, end)
        i = _skip(text, end)
        if text[i] == "}":
            return spans
        i = _expect(text, i, ",")


def items(text: str, start: int) -> list[tuple[int, int]]:
    """The (start, end) span of each item of the array at `start`."""
    spans: list[tuple[int, int]] = []
    i = _skip(text, _expect(text, start, "["))
    if text[i] == "]":
        return spans
    while True:
        i = _skip(text, i)
        _, end = _decoder.raw_decode(text, i)
        spans.append((i, end))
        i = _skip(text, end)
        if text[i] == "]":
            return spans
        i = _expect(text, i, ",")


def array_items(text: str, key: str) -> list[str]:
    """The raw text of each item of the top-level array member `key`."""
    start, _ = members(text)[key]
    return [text[a:b] for a, b in items(text, start)]


def member(text: str, key: str) -> str:
    """The raw text of the top-level member `key`."""
    a, b = members(text)[key]
    return text[a:b]
