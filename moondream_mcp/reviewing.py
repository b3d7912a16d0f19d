"""Reviewing a dataset's labels: pages of examples chosen by filters (shown as contact sheets), and fixes
applied by line number. Knows nothing of MCP.

Every fix is recorded in the line it changes, and nothing is lost: the line gets `reviewed: true` and a
`history` entry per fix — `{"fix": "drop", "before": {"boxes": [...]}}` holds the label as it was before
a change, so the first entry with a `before` holds the label as the model proposed it. A removed example
keeps its line, marked `removed: true` (datasets.py skips it), so line numbers never shift between
review_labels and fix_labels, and the file can be restored by hand. Lines that are not changed are
written back byte for byte, and a line changed keeps its keys in their order, the `job` of a label_images
dataset first (jsonl.py), so the dataset stays that job's own. The file is read and rewritten through the
file guard (outputs.rewrite).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from . import datasets, outputs, sheets
from .datasets import Example
from .failures import EXPECTED, Explain, InputError
from .files import FileGuard, OpenFile
from .images import ImageLoader
from .jsonl import line

REVIEWABLE = ("detect", "point")
PER_SHEET = 12
LOADING_AT_ONCE = 4
Action = Literal["accept", "drop", "replace", "none", "remove"]
Found = Literal["nothing", "many"]


@dataclass(frozen=True)
class Entry:
    line: int  # 1-based line of the file
    record: dict[str, Any]  # the line as written
    example: Example

    @property
    def labels(self) -> tuple[Any, ...]:
        """The example's boxes or points (a point example may be labelled with boxes)."""
        return self.example.points if self.example.points is not None else self.example.boxes or ()

    @property
    def reviewed(self) -> bool:
        return self.record.get("reviewed") is True


@dataclass
class Lines:
    path: Path  # the file's real path
    raw: list[bytes]  # every line of the file as written, without its newline
    entries: list[Entry]  # the detect and point examples among them


def read(files: FileGuard, ref: str) -> Lines:
    """The dataset `ref` names, through the file guard. Blocking: run it in a worker thread."""
    with files.open(ref, allow_empty=True) as opened:
        return parse(opened.read(), opened.path)


def parse(data: bytes, path: Path) -> Lines:
    """The file's lines and its reviewable examples; lines that are not examples are kept, not judged."""
    raw = data.splitlines()
    entries: list[Entry] = []
    for number, text in enumerate(raw, start=1):
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("removed") is True or record.get("skill") not in REVIEWABLE:
            continue
        try:
            example = datasets.parse_example(record, number, path.parent)
        except ValueError:
            continue
        entries.append(Entry(number, record, example))
    return Lines(path, raw, entries)


@dataclass
class Page:
    entries: list[Entry]
    matching: int  # examples passing the filters, on every page
    unreviewed: int  # reviewable examples not reviewed yet, in the whole file
    page: int
    pages: int


def page(
    entries: list[Entry],
    *,
    unreviewed: bool = False,
    object: str | None = None,
    found: Found | None = None,
    many: int = 5,
    number: int = 1,
    size: int = 24,
) -> Page:
    """Page `number` (1-based) of the examples passing every filter given, in file order."""
    wanted = object.strip().lower() if object else None
    chosen = [
        e
        for e in entries
        if not (unreviewed and e.reviewed)
        and (wanted is None or (e.example.object or "").strip().lower() == wanted)
        and (found != "nothing" or not e.labels)
        and (found != "many" or len(e.labels) >= many)
    ]
    pages = max(1, -(-len(chosen) // size))
    start = (number - 1) * size
    return Page(chosen[start : start + size], len(chosen), sum(not e.reviewed for e in entries), number, pages)


@dataclass(frozen=True)
class Shown:
    """A page as drawn: its cells numbered in order, and the sheets that show them."""

    cells: list[tuple[int, Entry, str | None]]  # number, example, why its image could not be shown
    sheets: list[tuple[bytes, list[int]]]  # a sheet's JPEG, and the numbers of the cells on it


async def show(chosen: Page, *, first: int, images: ImageLoader, explain: Explain) -> Shown:
    """The page's examples drawn on contact sheets of PER_SHEET cells, numbered from `first`, each with its
    labels numbered as fix_labels takes them; an image that cannot be loaded is shown as the reason."""
    loaded: list[bytes | str] = [b""] * len(chosen.entries)
    limiter = anyio.CapacityLimiter(LOADING_AT_ONCE)

    async def load(index: int, ref: str) -> None:
        async with limiter:
            try:
                loaded[index] = (await images.load(ref)).jpeg
            except EXPECTED as exc:
                loaded[index] = explain(exc)

    async with anyio.create_task_group() as tasks:
        for index, entry in enumerate(chosen.entries):
            tasks.start_soon(load, index, entry.example.ref)
    cells: list[tuple[int, Entry, str | None]] = []
    drawn: list[sheets.Cell] = []
    for number, (entry, image) in enumerate(zip(chosen.entries, loaded, strict=True), start=first):
        error = image if isinstance(image, str) else None
        cells.append((number, entry, error))
        drawn.append(
            sheets.Cell(
                title=f"{number} · line {entry.line} · {entry.example.object} ({len(entry.labels)})",
                jpeg=image if isinstance(image, bytes) else None,
                boxes=(entry.example.boxes if entry.example.points is None else ()) or (),
                points=entry.example.points or (),
                note=error,
                done=entry.reviewed,
            )
        )
    drawn_sheets = []
    for start in range(0, len(drawn), PER_SHEET):
        jpeg = await anyio.to_thread.run_sync(sheets.draw, drawn[start : start + PER_SHEET])
        drawn_sheets.append((jpeg, [number for number, _, _ in cells[start : start + PER_SHEET]]))
    return Shown(cells, drawn_sheets)


@dataclass(frozen=True)
class Fix:
    lines: tuple[int, ...]
    action: Action
    drop: tuple[int, ...] = ()  # box or point numbers as drawn on the sheet: 1 is the first
    boxes: list[Any] | None = None
    points: list[Any] | None = None


@dataclass
class Applied:
    changed: dict[str, int] = field(default_factory=dict)  # action -> lines
    lines: int = 0
    unreviewed: int = 0  # left in the file


def apply(files: FileGuard, opened: OpenFile, fixes: list[Fix]) -> Applied:
    """Apply every fix, in order, to the dataset `opened`, then rewrite it once (atomically). Nothing is
    written unless every fix is valid: the first that is not raises InputError naming its line. Blocking:
    run it in a worker thread."""
    lines = parse(opened.read(), opened.path)
    path = lines.path
    by_line = {e.line: e for e in lines.entries}
    records: dict[int, dict[str, Any]] = {}
    applied = Applied()
    for fix in fixes:
        for number in fix.lines:
            record = records.get(number)
            if record is None:
                entry = by_line.get(number)
                if entry is None:
                    raise InputError(_not_reviewable(lines, number))
                record = json.loads(lines.raw[number - 1])
            if record.get("removed") is True:
                raise InputError(f"line {number} was removed in this call; it takes no further fixes")
            records[number] = _fixed(record, fix, number, path.parent)
            applied.changed[fix.action] = applied.changed.get(fix.action, 0) + 1
    out: list[Any] = [records.get(i, raw) for i, raw in enumerate(lines.raw, start=1)]
    outputs.rewrite(files, opened, b"".join(line(record) for record in out))
    applied.lines = len(records)
    reviewed = {i for i, r in records.items() if r.get("reviewed") is True}
    applied.unreviewed = sum(not (e.reviewed or e.line in reviewed) for e in lines.entries)
    return applied


def _not_reviewable(lines: Lines, number: int) -> str:
    if not 1 <= number <= len(lines.raw):
        return f"line {number} is not in the file (it has {len(lines.raw)} lines)"
    return f"line {number} is not a detect or point example (or it was removed); review_labels lists the lines"


def _fixed(record: dict[str, Any], fix: Fix, number: int, base: Path) -> dict[str, Any]:
    record = dict(record)
    key = "points" if record.get("points") is not None else "boxes"
    before = {key: record.get(key)}
    history = list(record.get("history") or [])
    if fix.action == "accept":
        history.append({"fix": "accept"})
    elif fix.action == "remove":
        history.append({"fix": "remove"})
        record["removed"] = True
    else:
        if fix.action == "drop":
            if not fix.drop:
                raise InputError(f"line {number}: drop needs the numbers of the {key} to drop (1 is the first)")
            labels = list(record.get(key) or [])
            wrong = sorted(n for n in fix.drop if not 1 <= n <= len(labels))
            if wrong:
                raise InputError(f"line {number} has {len(labels)} {key}: there is no number {wrong[0]}")
            record[key] = [label for i, label in enumerate(labels, start=1) if i not in fix.drop]
        elif fix.action == "none":
            if record["skill"] == "point":
                record.pop("boxes", None)
                record["points"] = []
            else:
                record["boxes"] = []
        else:
            _replace(record, fix, number)
        history.append({"fix": fix.action, "before": before})
    record["reviewed"] = True
    record["history"] = history
    if not record.get("removed"):
        try:
            datasets.parse_example(record, number, base)
        except ValueError as exc:
            raise InputError(f"line {number}: {exc}") from None
    return record


def _replace(record: dict[str, Any], fix: Fix, number: int) -> None:
    if (fix.boxes is None) == (fix.points is None):
        raise InputError(f"line {number}: replace needs exactly one of boxes or points")
    if fix.points is not None:
        if record["skill"] != "point":
            raise InputError(f"line {number} is a detect example: replace its boxes, not points")
        record.pop("boxes", None)
        record["points"] = fix.points
    else:
        record.pop("points", None)
        record["boxes"] = fix.boxes
