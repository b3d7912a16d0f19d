"""Labelled test datasets made from generated pictures: shapes at known places, written as JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tests.support.pictures import canvas, save

SIZE = (160, 120)  # small: every image is decoded and sent many times in a run


def _box(rng: random.Random) -> tuple[float, float, float, float]:
    # Whole pixels, so the label is exactly the region the emulator sees.
    w, h = SIZE
    x0, y0 = rng.randrange(8, 70), rng.randrange(6, 50)
    x1, y1 = x0 + rng.randrange(40, 80), y0 + rng.randrange(30, 60)
    return x0 / w, y0 / h, x1 / w, y1 / h


def as_box(box: tuple[float, float, float, float]) -> dict[str, float]:
    return dict(zip(("x_min", "y_min", "x_max", "y_max"), box))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def detect_dataset(
    folder: Path, *, count: int = 10, colour: str = "orange", seed: int = 3, name: str = "panels.jsonl"
) -> Path:
    """`count` pictures of one `colour` panel each (a hard colour for the base model), one detect example each."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        box = _box(rng)
        save(canvas(SIZE, [(colour, box)]), folder / f"{colour}-{seed}-{i}.png")
        records.append(
            {
                "image": f"{colour}-{seed}-{i}.png",
                "skill": "detect",
                "object": f"{colour} panel",
                "boxes": [as_box(box)],
            }
        )
    return write_jsonl(folder / name, records)


def query_dataset(folder: Path, *, count: int = 6, seed: int = 5, name: str = "counts.jsonl") -> Path:
    """Pictures of one to three orange squares; "How many orange shapes?" answered with the count in words."""
    rng = random.Random(seed)
    words = ["zero", "one", "two", "three"]
    records = []
    for i in range(count):
        n = 1 + i % 3
        squares = [
            ("orange", (0.05 + 0.3 * k, 0.1 + 0.1 * (rng.random() > 0.5), 0.25 + 0.3 * k, 0.5)) for k in range(n)
        ]
        save(canvas(SIZE, squares), folder / f"count-{seed}-{i}.png")
        records.append(
            {
                "image": f"count-{seed}-{i}.png",
                "skill": "query",
                "question": "How many orange shapes?",
                "answer": words[n],
                "match": "normalized",
            }
        )
    return write_jsonl(folder / name, records)
