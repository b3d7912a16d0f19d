"""Labelled datasets for training and evaluation: the JSONL format, loading and checking it, the
deterministic train/eval split, and imports from COCO and YOLO. Knows nothing of MCP.

One example per line, a JSON object:

    {"image": "imgs/a.jpg", "skill": "detect", "object": "solar panel",
     "boxes": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.4, "y_max": 0.6}], "split": "train"}
    {"image": "/abs/b.png", "skill": "point", "object": "door handle", "points": [{"x": 0.5, "y": 0.5}]}
    {"image": "https://example.com/c.jpg", "skill": "query", "question": "How many cars?", "answer": "3"}

- `image`: a path relative to the dataset file, an absolute path, or an http(s) / data URL.
- `skill`: query, point or detect. query needs `question` and `answer` (optional `choices`, a list of
  allowed answers, and `match`: exact / normalized (default) / regex / contains — see scoring.py);
  point needs `object` and `points` or `boxes`; detect needs `object` and `boxes` (`boxes: []` or
  `points: []`: the object is not in the image). Coordinates are normalized 0-1, origin top-left; a box
  may also be written `[x_min, y_min, x_max, y_max]` and a point `[x, y]`.
- `split`: optional, train or eval. Examples without one are split by image (see assign_splits).
- Review marks (labelling.py, reviewing.py): `reviewed` (false until a person or agent has looked),
  `labelled_by` (the model that proposed the label), `history` (each fix with the label before it), and
  `removed: true` for an example taken out: the line stays in the file, so line numbers never shift and
  nothing is lost, but it is no longer an example.
- `job`: written first by import_dataset and label_images, to know the file as their own output (jsonl.py);
  ignored when reading.

Reading a file is not a way to see what is in it: problems name lines and what is wrong with them, and
quote a value only from a line that names an image and a known skill (a dataset example, if a flawed one);
samples are lines that parsed as examples. A text file that is not a dataset shows nothing of itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .failures import InputError
from .files import FileError, FileGuard, FileMissing, OpenFile, describe
from .images import is_image_name
from .jsonl import LineWriter, job_id
from .scoring import MATCH_RULES, Box, Point, regex_problem

SKILLS = ("query", "point", "detect")
SPLITS = ("train", "eval")
EVAL_FRACTION = 0.2  # share of images held out for evaluation when the file gives no split
SPLIT_SEED = 0  # the same for runs and evaluate, so both hold out the same images
MAX_LINE_CHARS = 1_000_000
_URL = re.compile(r"^(https?|data):", re.IGNORECASE)


class DatasetError(InputError):
    """The dataset cannot be read or imported at all; the message is meant for the agent."""


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line in the file
    image: str  # as written
    ref: str  # resolved: an absolute path or a URL
    skill: str
    question: str | None = None
    object: str | None = None
    answer: str | None = None
    choices: tuple[str, ...] | None = None
    match: str = "normalized"
    points: tuple[Point, ...] | None = None
    boxes: tuple[Box, ...] | None = None
    split: str | None = None

    @property
    def prompt(self) -> str:
        return (self.question if self.skill == "query" else self.object) or ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Example:
        fields = dict(data)
        for key in ("choices",):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        for key in ("points", "boxes"):
            if fields.get(key) is not None:
                fields[key] = tuple(tuple(v) for v in fields[key])
        return cls(**fields)


@dataclass(frozen=True)
class Problem:
    line: int | None  # None: about the file as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


@dataclass
class Dataset:
    path: Path
    examples: list[Example]
    problems: list[Problem]
    samples: list[str]  # the first few example lines as written
    identity: tuple[int, int] | None = None  # (device, inode) of the file read

    def counts(self) -> dict[str, dict[str, int]]:
        splits = Counter(e.split or "unassigned" for e in self.examples)
        return {
            "skill": dict(Counter(e.skill for e in self.examples)),
            "object": dict(Counter(e.prompt for e in self.examples).most_common(50)),
            "split": dict(splits),
        }


# ---- reading --------------------------------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{what} must be a number")
    return float(value)


def _coordinates(value: Any, keys: tuple[str, ...], what: str) -> tuple[float, ...]:
    """{key: number, ...} or [number, ...] in `keys` order, each normalized 0-1."""
    if isinstance(value, dict):
        try:
            raw = [value[k] for k in keys]
        except KeyError:
            raise ValueError(f"a {what} needs {_listed(keys)}") from None
    elif isinstance(value, list) and len(value) == len(keys):
        raw = value
    else:
        raise ValueError(f"a {what} is {{{', '.join(keys)}}} or [{', '.join(keys)}]")
    numbers = tuple(_number(v, f"a {what} coordinate") for v in raw)
    if not all(0 <= v <= 1 for v in numbers):
        raise ValueError(f"{what} {list(numbers)} is out of range: coordinates are normalized 0-1")
    return numbers


def _listed(keys: tuple[str, ...]) -> str:
    return " and ".join(keys) if len(keys) == 2 else ", ".join(keys)


def _box(value: Any) -> Box:
    box = _coordinates(value, ("x_min", "y_min", "x_max", "y_max"), "box")
    if box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError(f"box {list(box)} is inverted or empty: x_min < x_max and y_min < y_max")
    return box  # type: ignore[return-value]


def _point(value: Any) -> Point:
    return _coordinates(value, ("x", "y"), "point")  # type: ignore[return-value]


def _text(record: dict[str, Any], key: str, skill: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"empty label: a {skill} example needs a non-empty `{key}`")
    return value


def resolve_image(image: str, base: Path) -> str:
    """An image reference relative to the dataset file made absolute; absolute paths and URLs as given."""
    if _URL.match(image):
        return image
    if image[:7].lower() == "file://":
        return image
    path = Path(os.path.expanduser(image))
    return str(path if path.is_absolute() else base / path)


def parse_example(record: Any, line: int, base: Path) -> Example:
    """One line's object as an Example; raises ValueError naming what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("a line must be a JSON object")
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ValueError("missing `image`")
    skill = record.get("skill")
    if skill not in SKILLS:
        raise ValueError(f"`skill` must be one of {', '.join(SKILLS)}")
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"`split` must be train or eval, not {split!r}")
    fields: dict[str, Any] = {
        "line": line,
        "image": image,
        "ref": resolve_image(image.strip(), base),
        "skill": skill,
        "split": split,
    }
    if skill == "query":
        fields["question"] = _text(record, "question", skill)
        fields["answer"] = _text(record, "answer", skill)
        match = record.get("match", "normalized")
        if match not in MATCH_RULES:
            raise ValueError(f"`match` must be one of {', '.join(MATCH_RULES)}, not {match!r}")
        if match == "regex" and (problem := regex_problem(fields["answer"])):
            raise ValueError(problem)
        fields["match"] = match
        choices = record.get("choices")
        if choices is not None:
            if (
                not isinstance(choices, list)
                or not choices
                or not all(isinstance(c, str) and c.strip() for c in choices)
            ):
                raise ValueError("`choices` must be a non-empty list of strings")
            fields["choices"] = tuple(choices)
        return Example(**fields)
    fields["object"] = _text(record, "object", skill)
    points, boxes = record.get("points"), record.get("boxes")
    if skill == "point":
        if (points is None) == (boxes is None):
            raise ValueError("a point example needs exactly one of `points` or `boxes`")
        labels = points if points is not None else boxes
        # `points: []` says the object is absent, as `boxes: []` does for detect.
        if not isinstance(labels, list) or (not labels and points is None):
            raise ValueError("empty label: `points` must be a list ([]: absent), `boxes` a non-empty list")
        if points is not None:
            fields["points"] = tuple(_point(p) for p in labels)
        else:
            fields["boxes"] = tuple(_box(b) for b in labels)
        return Example(**fields)
    if points is not None:
        raise ValueError("a detect example takes `boxes`, not `points`")
    if not isinstance(boxes, list):
        raise ValueError("empty label: a detect example needs `boxes` (a list; [] when the object is absent)")
    fields["boxes"] = tuple(_box(b) for b in boxes)
    return Example(**fields)


def parse(text: str, base: Path, *, samples: int = 3) -> tuple[list[Example], list[Problem], list[str]]:
    """Every example of a JSONL text, the problems of the lines that are not, and the first few examples
    as written."""
    examples: list[Example] = []
    problems: list[Problem] = []
    shown: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_LINE_CHARS:
            problems.append(Problem(number, f"line longer than {MAX_LINE_CHARS} characters"))
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(number, f"not JSON: {getattr(exc, 'msg', 'invalid')}"))
            continue
        except RecursionError:
            problems.append(Problem(number, "not a dataset line: JSON nested too deeply"))
            continue
        if isinstance(record, dict) and record.get("removed") is True:
            continue  # kept for the record (reviewing.py), no longer an example
        try:
            examples.append(parse_example(record, number, base))
        except ValueError as exc:
            problems.append(Problem(number, str(exc)))
            continue
        if len(shown) < samples:
            shown.append(line if len(line) <= 400 else line[:399] + "…")
    if not examples and not problems:
        problems.append(Problem(None, "the file has no examples"))
    problems += split_conflicts(examples)
    return examples, problems, shown


def load(files: FileGuard, ref: str) -> Dataset:
    """Read and parse a JSONL dataset through the file guard. Blocking: run it in a worker thread."""
    with files.open(ref, allow_empty=True) as opened:
        data = opened.read()
        identity = (opened.stat.st_dev, opened.stat.st_ino)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{opened.label} is not UTF-8 text; a dataset is a JSONL file") from None
    examples, problems, samples = parse(text, opened.path.parent)
    return Dataset(opened.path, examples, problems, samples, identity)


def split_conflicts(examples: Iterable[Example]) -> list[Problem]:
    """An image given both splits would leak evaluation data into training."""
    splits: dict[str, set[str]] = defaultdict(set)
    first: dict[str, int] = {}
    for e in examples:
        if e.split:
            splits[e.ref].add(e.split)
            first.setdefault(e.ref, e.line)
    return [
        Problem(first[ref], f"image {ref} is in both the train and the eval split")
        for ref, seen in splits.items()
        if len(seen) > 1
    ]


# ---- checking images ------------------------------------------------------------------------------

ImageCheck = Callable[[str], str | None]  # a resolved reference -> a problem, or None


def image_problems(examples: Iterable[Example], check: ImageCheck) -> list[Problem]:
    """One problem per image that `check` faults (each image checked once, named at its first line)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for e in examples:
        if e.ref in seen:
            continue
        seen.add(e.ref)
        if (problem := check(e.ref)) is not None:
            problems.append(Problem(e.line, problem))
    return problems


def readable_image(opened: OpenFile) -> str | None:
    """Why an opened image file cannot be decoded, from its header alone; None when it looks fine."""
    from PIL import Image, UnidentifiedImageError

    path = opened.label
    try:
        with os.fdopen(os.dup(opened.fd), "rb") as f, Image.open(f) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return f"unreadable image: {path} is not an image file this server can decode"
    except Image.DecompressionBombError:
        return f"unreadable image: {path} has too many pixels"
    if width < 1 or height < 1:
        return f"unreadable image: {path} has no pixels"
    return None


def is_url(ref: str) -> bool:
    return _URL.match(ref) is not None


# ---- splitting ------------------------------------------------------------------------------------


def _rank(ref: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\0{ref}".encode()).digest()


def assign_splits(
    examples: list[Example], *, eval_fraction: float = EVAL_FRACTION, seed: int = SPLIT_SEED
) -> list[Example]:
    """Every example with a split. Given splits stay; an image with any given split takes it for all its
    examples; the other images are ordered by a seeded hash and the first `eval_fraction` of them (at
    least one, when there are two or more) go to eval. By image, so one image is never in both."""
    given: dict[str, str] = {}
    for e in examples:
        if e.split:
            given.setdefault(e.ref, e.split)
    free = sorted({e.ref for e in examples if e.ref not in given}, key=lambda ref: _rank(ref, seed))
    held = max(1, round(len(free) * eval_fraction)) if len(free) >= 2 else 0
    if any(split == "eval" for split in given.values()):
        held = round(len(free) * eval_fraction)  # the file already holds out some images: no minimum
    chosen = {ref: ("eval" if i < held else "train") for i, ref in enumerate(free)}
    return [e if e.split else replace(e, split=given.get(e.ref) or chosen[e.ref]) for e in examples]


def select(examples: list[Example], split: str) -> list[Example]:
    """The examples of a split ("train", "eval" or "all"), splits assigned first."""
    assigned = assign_splits(examples)
    return assigned if split == "all" else [e for e in assigned if e.split == split]


# ---- writing and importing ------------------------------------------------------------------------


def _relative(image: Path, output_dir: Path) -> str:
    """How a line refers to an image: relative to the output file when below it, else absolute."""
    try:
        return image.relative_to(output_dir).as_posix()
    except ValueError:
        return str(image)


def image_field(ref: str, output_dir: Path) -> str:
    """How a line written to a file in `output_dir` names the image `ref`: local paths below the folder
    relative to it, anything else (other paths, file:// and data URLs) as given."""
    if is_url(ref) or ref[:7].lower() == "file://":
        return ref
    return _relative(Path(os.path.expanduser(ref)), output_dir)


def _round_box(x0: float, y0: float, x1: float, y1: float) -> dict[str, float] | None:
    box = [round(min(1.0, max(0.0, v)), 6) for v in (x0, y0, x1, y1)]
    if box[0] >= box[2] or box[1] >= box[3]:
        return None
    return dict(zip(("x_min", "y_min", "x_max", "y_max"), box))


@dataclass
class Imported:
    records: list[dict[str, Any]]
    images: int
    skipped: list[str]  # why some annotations or images were left out (a few examples)
    skipped_count: int = 0

    def skip(self, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < 10:
            self.skipped.append(reason)


def from_coco(
    data: Any, *, image_dir: Path, output_dir: Path, split: str | None = None, negatives: bool = False
) -> Imported:
    """COCO detection JSON -> one detect example per (image, category) with at least one box; boxes
    normalized from pixel [x, y, width, height] by the image's size. Crowd annotations are left out.

    `negatives`: COCO lists every object of every category, so a category an image has no annotation of
    is absent from it: one `boxes: []` example for each such (image, category) too.
    """
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError("not a COCO detection file: it needs `images`, `annotations` and `categories` lists")
    names = {c.get("id"): c.get("name") for c in data["categories"] if isinstance(c, dict)}
    images = {i.get("id"): i for i in data["images"] if isinstance(i, dict)}
    out = Imported([], 0, [])
    grouped: dict[tuple[Any, Any], list[dict[str, float]]] = defaultdict(list)
    if negatives:
        # A pair with any annotation, even one left out (a crowd, a bad box), is not known to be empty.
        touched = {(a.get("image_id"), a.get("category_id")) for a in data["annotations"] if isinstance(a, dict)}
        for image_id in images:
            for category_id in names:
                if (image_id, category_id) not in touched:
                    grouped[(image_id, category_id)] = []
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            out.skip("an annotation that is not an object")
            continue
        if ann.get("iscrowd"):
            out.skip(f"annotation {ann.get('id')}: a crowd region, not one object")
            continue
        image = images.get(ann.get("image_id"))
        if image is None or ann.get("category_id") not in names:
            out.skip(f"annotation {ann.get('id')}: unknown image or category")
            continue
        bbox = ann.get("bbox")
        width, height = image.get("width"), image.get("height")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) for v in bbox)
            or not isinstance(width, (int, float))
            or not isinstance(height, (int, float))
            or width <= 0
            or height <= 0
        ):
            out.skip(f"annotation {ann.get('id')}: no usable bbox or image size")
            continue
        x, y, w, h = bbox
        box = _round_box(x / width, y / height, (x + w) / width, (y + h) / height)
        if box is None:
            out.skip(f"annotation {ann.get('id')}: an empty box")
            continue
        grouped[(image["id"], ann["category_id"])].append(box)
    used: set[Any] = set()
    for (image_id, category_id), boxes in sorted(grouped.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        file_name = images[image_id].get("file_name")
        if not isinstance(file_name, str) or not file_name:
            out.skip(f"image {image_id}: no file_name")
            continue
        record: dict[str, Any] = {
            "image": _relative(image_dir / file_name, output_dir),
            "skill": "detect",
            "object": str(names[category_id]),
            "boxes": boxes,
        }
        if split:
            record["split"] = split
        out.records.append(record)
        used.add(image_id)
    out.images = len(used)
    return out


_YOLO_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "eval",
    "valid": "eval",
    "validation": "eval",
    "test": "eval",
    "eval": "eval",
}


def yolo_class_names(files: FileGuard, root: Path) -> list[str] | None:
    """Class names from data.yaml / dataset.yaml (`names:` as a list or an index map), classes.txt or obj.names,
    each read through the file guard: a class file that leads outside the allowed dirs is refused."""
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (text := _read_text(files, root / name)) is not None and (names := _yaml_names(text)):
            return names
    for name in ("classes.txt", "obj.names", "classes.names"):
        if (text := _read_text(files, root / name)) is not None:
            return [line.strip() for line in text.splitlines() if line.strip()]
    return None


def _read_text(files: FileGuard, path: Path) -> str | None:
    """A small text file's content, None when there is no such file."""
    try:
        with files.open(str(path), allow_empty=True) as opened:
            return opened.read().decode("utf-8", errors="replace")
    except FileMissing:
        return None


def _yaml_names(text: str) -> list[str] | None:
    # Just the `names` key, in its three common spellings; no YAML library needed for that.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^names\s*:\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(1).strip()
        if rest.startswith("["):
            return [_unquote(v) for v in rest.strip("[]").split(",") if v.strip()]
        if rest.startswith("{"):
            pairs = [p.split(":", 1) for p in rest.strip("{}").split(",") if ":" in p]
            if not all(k.strip().isdigit() for k, _ in pairs):
                return None
            return [_unquote(v) for _, v in sorted(pairs, key=lambda kv: int(kv[0].strip()))]
        names: dict[int, str] = {}
        listed: list[str] = []
        for item in lines[i + 1 :]:
            if item.strip() and not item.startswith((" ", "\t", "-")):
                break
            if m := re.match(r"^\s*(\d+)\s*:\s*(.+)$", item):
                names[int(m.group(1))] = _unquote(m.group(2))
            elif m := re.match(r"^\s*-\s*(.+)$", item):
                listed.append(_unquote(m.group(1)))
        return [names[k] for k in sorted(names)] if names else listed or None
    return None


def _unquote(value: str) -> str:
    return value.split("#", 1)[0].strip().strip("'\"")


def from_yolo(
    files: FileGuard, root: Path, *, output_dir: Path, classes: list[str] | None = None, negatives: bool = False
) -> Imported:
    """A YOLO folder -> one detect example per (image, class) with at least one box.

    Images are under root/images (or root itself) and each has a label file of the same stem under
    root/labels (mirroring any subfolder) or beside it: lines of `class x_centre y_centre width height`,
    normalized. A subfolder named train / val / valid / test sets the split. Hidden names are skipped;
    every file is listed and read through the file guard.
    `negatives`: a label file lists every object, so a class it has no line of is absent from the image:
    one `boxes: []` example for it too.
    """
    names = classes or yolo_class_names(files, root)
    if not names:
        raise DatasetError(f"no class names: pass `classes`, or put data.yaml (names: ...) or classes.txt in {root}")
    image_root = _subdir(files, root, "images") or root
    label_root = _subdir(files, root, "labels") or image_root
    out = Imported([], 0, [])
    with files.open_dir(str(image_root)) as top:
        listed = files.find(top, ["**", "*"], accept=is_image_name)
    for image in sorted(listed):
        relative = image.relative_to(image_root)
        label = label_root / relative.with_suffix(".txt")
        try:
            text = _read_text(files, label)
        except FileError as exc:
            out.skip(f"{relative}: {exc}")
            continue
        if text is None:
            out.skip(f"{relative}: no label file")
            continue
        by_class: dict[int, list[dict[str, float]]] = defaultdict(list)
        touched: set[str] = set()
        for number, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            touched.add(parts[0])
            try:
                cls = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:5])
            except (ValueError, IndexError):
                out.skip(f"{label.name}:{number}: not `class x y w h`")
                continue
            if not 0 <= cls < len(names):
                out.skip(f"{label.name}:{number}: class {cls} has no name")
                continue
            box = _round_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            if box is None:
                out.skip(f"{label.name}:{number}: an empty box")
                continue
            by_class[cls].append(box)
        if negatives:
            by_class.update((cls, []) for cls in range(len(names)) if str(cls) not in touched)
        split = next((_YOLO_SPLITS[p.lower()] for p in relative.parts[:-1] if p.lower() in _YOLO_SPLITS), None)
        for cls in sorted(by_class):
            record: dict[str, Any] = {
                "image": _relative(image, output_dir),
                "skill": "detect",
                "object": names[cls],
                "boxes": by_class[cls],
            }
            if split:
                record["split"] = split
            out.records.append(record)
        if by_class:
            out.images += 1
    return out


def _subdir(files: FileGuard, root: Path, name: str) -> Path | None:
    try:
        with files.open_dir(str(root / name)) as found:
            return found.path
    except FileMissing:
        return None


def read_checked(files: FileGuard, path: str) -> tuple[Dataset, list[Problem], int]:
    """The dataset at `path` (through the file guard), every problem (lines, then images), and how many
    image URLs went unchecked. Blocking: run it in a worker thread."""
    dataset = load(files, path)

    def check(ref: str) -> str | None:
        if is_url(ref):
            return None
        try:
            with files.open(ref) as opened:
                return readable_image(opened)
        except FileError as exc:
            return str(exc)

    problems = image_problems(dataset.examples, check)
    urls = len({e.ref for e in dataset.examples if is_url(e.ref)})
    return dataset, dataset.problems + problems, urls


Format = Literal["coco", "yolo"]


def import_dataset(
    files: FileGuard,
    source: str,
    format: Format,
    output: str,
    *,
    image_dir: str | None = None,
    classes: list[str] | None = None,
    split: str | None = None,
    negatives: bool = False,
) -> tuple[Imported, Path]:
    """A COCO detection file or a YOLO folder turned into our JSONL at `output`, and the path written.

    The output must be new or an earlier output of this same import (jsonl.py's rule): never the source,
    never anyone else's file. Nothing is written, and a new file is not left behind, when nothing imports.
    Blocking: run it in a worker thread.
    """
    if format == "coco":
        with files.open(source) as opened:
            data = opened.read()
            read = {(opened.stat.st_dev, opened.stat.st_ino)}
            origin = opened.path
        images_at = origin.parent
        if image_dir:
            with files.open_dir(image_dir) as folder:
                images_at = folder.path
    else:
        with files.open_dir(source) as folder:
            origin = folder.path
        read = set()
    job = job_id(
        tool="import_dataset",
        format=format,
        source=origin,
        image_dir=image_dir,
        classes=classes,
        split=split,
        negatives=negatives,
    )
    target = files.open_output(output)
    if target.identity in read:
        target.close()
        raise FileError(f"refused to write {target.label}: it is the file being imported; give a new file name.")
    lines = LineWriter.claim(target, job, "replace", tool="import_dataset")
    try:
        if format == "coco":
            try:
                parsed = json.loads(data.decode("utf-8"))
            except (ValueError, RecursionError):
                raise DatasetError(f"{describe(source)} is not a JSON file") from None
            imported = from_coco(
                parsed, image_dir=images_at, output_dir=target.path.parent, split=split, negatives=negatives
            )
        else:
            imported = from_yolo(files, origin, output_dir=target.path.parent, classes=classes, negatives=negatives)
        if not imported.records:
            lines.abandon()
            return imported, target.path
        for record in imported.records:
            lines.write(record)
    except BaseException:
        lines.abandon()
        raise
    lines.close()
    return imported, target.path
