"""Exporting a dataset's detect examples to the formats detection tools read: COCO detection JSON, a YOLO
folder or Pascal VOC XML, splits kept (datasets.assign_splits: the same split training uses), images
copied or linked. Knows nothing of MCP.

Boxes become pixels of the image as displayed (EXIF orientation applied), as the labels are. A copied
image that carries an EXIF turn is written upright, so tools that ignore EXIF see what the labels see;
a linked one cannot be, and is counted in `rotated`.

Layouts (`val` is the eval split, as those tools name it):
  coco  train/_annotations.coco.json + its images, val/... (import each with import_dataset, split=...)
  yolo  images/{train,val}/, labels/{train,val}/ (one `class cx cy w h` line per box), data.yaml
  voc   JPEGImages/, Annotations/*.xml (1-based inclusive pixel corners), ImageSets/Main/{train,val}.txt

Those formats list every object of every class, so a class an image has no box of is absent from it:
`boxes: []` examples need no line of their own (an image with no box at all is a background image), and
import_dataset with negatives=true turns them back into `boxes: []` examples.

Never destroys what is not its own: the output folder must be new, empty, or an earlier export of this
server (its MARKER file lists what it wrote; those files are replaced, nothing else), and no file it is
about to write may exist. Everything goes through the file guard: the folder is opened once and every
file below it is reached by name through that descriptor, never through a symlink (files.OpenDir), each
written file is created new, and the MARKER, listing what is about to be written, is renamed into place
before the first of them, so an export cut short is still known as ours the next time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from . import datasets, outputs, reviewing
from .failures import InputError
from .files import FileError, FileGuard, FileMissing, OpenDir

Format = Literal["coco", "yolo", "voc"]
Mode = Literal["copy", "link"]
MARKER = "moondream-export.json"
FOLDER = {"train": "train", "eval": "val"}
COCO_FILE = "_annotations.coco.json"
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height

Box = tuple[float, float, float, float]


@dataclass
class Picture:
    """One image of the export, with its boxes by class index."""

    source: Path  # the real path of the original
    name: str  # its file name in the export, unique (stems too: YOLO and VOC name labels by stem)
    width: int  # as displayed
    height: int
    turned: bool  # EXIF orientation other than 1: the stored pixels are not as displayed
    split: str
    boxes: list[tuple[int, Box]] = field(default_factory=list)


@dataclass
class Exported:
    output: Path
    images: int = 0
    boxes: int = 0
    classes: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)  # images per split
    files: int = 0
    rotated: int = 0  # linked images with an EXIF turn: tools that ignore EXIF will misplace their boxes
    skipped: list[str] = field(default_factory=list)
    skipped_count: int = 0

    def skip(self, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < 10:
            self.skipped.append(reason)


def export(
    files: FileGuard, dataset: str, output: str, *, format: Format, mode: Mode, reviewed_only: bool = False
) -> Exported:
    """Export the dataset `dataset` names to the folder `output`. Blocking: run it in a worker thread."""
    result = Exported(Path(output))
    source, pictures = _pictures(files, dataset, result, reviewed_only)
    if not pictures:
        reasons = "; ".join(result.skipped[:3])
        raise InputError(
            "nothing to export: no detect example with a local image" + (f" ({reasons})" if reasons else "")
        )
    writes = _layout(pictures, result.classes, format, source)
    written = [relative for relative, _ in writes]
    targets = [_target(relative) for relative in written]
    with ExitStack() as stack:
        folder, previous = _claim_folder(files, output)
        stack.callback(folder.close)
        result.output = folder.path
        folders = _Folders(folder, stack)
        ours = {parts for f in previous if (parts := _parts(f)) is not None}
        for relative, parts in zip(written, targets, strict=True):
            if parts not in ours and folders.has(parts):
                raise InputError(
                    f"{folder.path / relative} exists and was not written by an earlier export; move it, or export "
                    "elsewhere"
                )
        for parts in ours:
            folders.remove(parts)
        marker = {"format": format, "dataset": str(source), "images": mode, "files": written}
        outputs.write_over(folder, MARKER, json.dumps(marker, indent=1).encode())
        for (_, content), parts in zip(writes, targets, strict=True):
            where = folders.get(parts[:-1])
            if isinstance(content, Picture):
                _put_image(files, content, where, parts[-1], mode, result)
            else:
                outputs.write_new(where, parts[-1], content)
    result.files = len(written)
    result.images = len(pictures)
    result.boxes = sum(len(p.boxes) for p in pictures)
    for p in pictures:
        result.splits[p.split] = result.splits.get(p.split, 0) + 1
    return result


# ---- what to export ------------------------------------------------------------------------------


def _pictures(files: FileGuard, dataset: str, result: Exported, reviewed_only: bool) -> tuple[Path, list[Picture]]:
    """The dataset's real path and its pictures, from one read of it through the file guard."""
    with files.open(dataset, allow_empty=True) as opened:
        data = opened.read()
        source = opened.path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise datasets.DatasetError(f"{opened.label} is not UTF-8 text; a dataset is a JSONL file") from None
    examples, _, _ = datasets.parse(text, source.parent)
    splits = {e.line: e.split for e in datasets.assign_splits(examples)}
    reviewable = reviewing.parse(data, source).entries
    entries = [e for e in reviewable if e.example.skill == "detect"]
    by_image: dict[str, Picture] = {}
    names: set[str] = set()
    for entry in entries:
        example = entry.example
        if reviewed_only and not entry.reviewed:
            continue
        if datasets.is_url(example.ref) or example.ref[:7].lower() == "file://":
            result.skip(f"line {entry.line}: {example.image} is not a local file")
            continue
        picture = by_image.get(example.ref)
        if picture is None:
            try:
                picture = _picture(files, example.ref, splits.get(entry.line) or "train", names)
            except (FileError, InputError) as exc:
                result.skip(f"line {entry.line}: {exc}")
                continue
            by_image[example.ref] = picture
        name = (example.object or "").strip()
        if name not in result.classes:
            result.classes.append(name)
        index = result.classes.index(name)
        picture.boxes += [(index, box) for box in example.boxes or ()]
    skipped = len(reviewable) - len(entries)
    if skipped:
        result.skip(f"{skipped} point example(s): detection formats hold boxes")
    return source, list(by_image.values())


def _picture(files: FileGuard, ref: str, split: str, names: set[str]) -> Picture:
    with files.open(ref) as opened:
        try:
            with os.fdopen(os.dup(opened.fd), "rb") as f, Image.open(f) as image:
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise InputError(f"{opened.label} is not an image this server can read") from None
        path = opened.path
    if orientation in _TURNED:
        width, height = height, width
    name = path.name
    if path.stem.lower() in names:
        name = f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:6]}{path.suffix}"
    names.add(Path(name).stem.lower())
    return Picture(path, name, width, height, orientation not in (None, 1), split)


# ---- the formats ---------------------------------------------------------------------------------

Write = tuple[str, "bytes | Picture"]  # a path relative to the output folder, and its content


def _layout(pictures: list[Picture], classes: list[str], format: Format, dataset: Path) -> list[Write]:
    layouts: dict[str, Callable[[list[Picture], list[str], Path], list[Write]]] = {
        "coco": _coco,
        "yolo": _yolo,
        "voc": _voc,
    }
    return layouts[format](pictures, classes, dataset)


def _pixels(box: Box, picture: Picture) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return x0 * picture.width, y0 * picture.height, x1 * picture.width, y1 * picture.height


def _coco(pictures: list[Picture], classes: list[str], dataset: Path) -> list[Write]:
    writes: list[Write] = []
    for split, folder in FOLDER.items():
        chosen = [p for p in pictures if p.split == split]
        if not chosen:
            continue
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, picture in enumerate(chosen, start=1):
            images.append({"id": image_id, "file_name": picture.name, "width": picture.width, "height": picture.height})
            for index, box in picture.boxes:
                x0, y0, x1, y1 = _pixels(box, picture)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": index + 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
            writes.append((f"{folder}/{picture.name}", picture))
        coco = {
            "info": {"description": f"moondream-mcp export of {dataset.name} ({split} split)"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(classes)],
        }
        writes.append((f"{folder}/{COCO_FILE}", json.dumps(coco, ensure_ascii=False).encode()))
    return writes


def _number(value: float) -> str:
    return format(value, ".10g")


def _yolo(pictures: list[Picture], classes: list[str], dataset: Path) -> list[Write]:
    writes: list[Write] = []
    for picture in pictures:
        folder = FOLDER[picture.split]
        rows = []
        for index, (x0, y0, x1, y1) in picture.boxes:
            centre = ((x0 + x1) / 2, (y0 + y1) / 2)
            rows.append(" ".join([str(index), *map(_number, (*centre, x1 - x0, y1 - y0))]) + "\n")
        writes.append((f"images/{folder}/{picture.name}", picture))
        writes.append((f"labels/{folder}/{Path(picture.name).stem}.txt", "".join(rows).encode()))
    used = {FOLDER[p.split] for p in pictures}
    names = "".join(f"  {i}: {json.dumps(name, ensure_ascii=False)}\n" for i, name in enumerate(classes))
    yaml = (
        f"# moondream-mcp export of {dataset.name}\npath: .\ntrain: images/train\n"
        f"val: images/{'val' if 'val' in used else 'train'}\nnc: {len(classes)}\nnames:\n{names}"
    )
    writes.append(("data.yaml", yaml.encode()))
    return writes


def _voc(pictures: list[Picture], classes: list[str], dataset: Path) -> list[Write]:
    writes: list[Write] = []
    lists: dict[str, list[str]] = {}
    for picture in pictures:
        stem = Path(picture.name).stem
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = picture.name
        ET.SubElement(ET.SubElement(root, "source"), "database").text = f"moondream-mcp export of {dataset.name}"
        size = ET.SubElement(root, "size")
        for key, number in (("width", picture.width), ("height", picture.height), ("depth", 3)):
            ET.SubElement(size, key).text = str(number)
        ET.SubElement(root, "segmented").text = "0"
        for index, box in picture.boxes:
            x0, y0, x1, y1 = _pixels(box, picture)
            item = ET.SubElement(root, "object")
            ET.SubElement(item, "name").text = classes[index]
            for key, text in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
                ET.SubElement(item, key).text = text
            corners = ET.SubElement(item, "bndbox")
            # VOC counts pixels from 1, corners inclusive: pixel column c (0-based) is c + 1.
            pixels = (round(x0) + 1, round(y0) + 1, max(round(x0) + 1, round(x1)), max(round(y0) + 1, round(y1)))
            for key, pixel in zip(("xmin", "ymin", "xmax", "ymax"), pixels, strict=True):
                ET.SubElement(corners, key).text = str(pixel)
        ET.indent(root)
        writes.append((f"JPEGImages/{picture.name}", picture))
        writes.append((f"Annotations/{stem}.xml", ET.tostring(root, encoding="utf-8", xml_declaration=True)))
        lists.setdefault(FOLDER[picture.split], []).append(stem)
    for folder, stems in lists.items():
        writes.append((f"ImageSets/Main/{folder}.txt", "".join(f"{s}\n" for s in stems).encode()))
    return writes


# ---- writing -------------------------------------------------------------------------------------


def _claim_folder(files: FileGuard, output: str) -> tuple[OpenDir, list[str]]:
    """The output folder, opened (made when new), and the files an earlier export of ours wrote there."""
    try:
        folder = files.open_dir(output)
    except FileMissing:
        return files.make_dir(output), []  # a new folder: its parent must be allowed and exist
    try:
        if not folder.names():
            return folder, []
        with files.open(str(folder.path / MARKER)) as opened:
            listed = json.loads(opened.read())["files"]
        if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
            raise ValueError
    except (FileError, ValueError, KeyError, TypeError):
        folder.close()
        raise InputError(
            f"the output folder {folder.path} is not empty and is not an export of this server; give a new or "
            "empty folder"
        ) from None
    except BaseException:
        folder.close()
        raise
    return folder, listed


def _parts(relative: str) -> tuple[str, ...] | None:
    """A name the export may write or replace, relative to its folder, as its components; None when it
    climbs out, is absolute, or names something hidden: a marker is a file anyone could edit."""
    path = PurePosixPath(relative)
    parts = path.parts
    if not parts or path.is_absolute() or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    return parts


def _target(relative: str) -> tuple[str, ...]:
    parts = _parts(relative)
    if parts is None or parts == (MARKER,):
        raise ValueError(f"an export never writes {relative}")  # the layouts name only plain files of their own
    return parts


class _Folders:
    """The folders below the export's, each opened once, by name from the one above (never through a link)."""

    def __init__(self, top: OpenDir, stack: ExitStack) -> None:
        self.opened: dict[tuple[str, ...], OpenDir] = {(): top}
        self.stack = stack

    def get(self, parts: tuple[str, ...], *, create: bool = True) -> OpenDir:
        if (found := self.opened.get(parts)) is not None:
            return found
        below = self.get(parts[:-1], create=create).child(parts[-1], create=create)
        self.stack.callback(below.close)
        self.opened[parts] = below
        return below

    def has(self, parts: tuple[str, ...]) -> bool:
        try:
            return self.get(parts[:-1], create=False).has(parts[-1])
        except FileMissing:
            return False

    def remove(self, parts: tuple[str, ...]) -> None:
        try:
            self.get(parts[:-1], create=False).remove(parts[-1])
        except FileMissing:
            pass


def _put_image(files: FileGuard, picture: Picture, folder: OpenDir, name: str, mode: Mode, result: Exported) -> None:
    if mode == "link":
        if picture.turned:
            result.rotated += 1
        folder.link(name, picture.source)
        return
    with files.open(str(picture.source)) as opened:
        data = opened.read()
    if picture.turned:
        with Image.open(io.BytesIO(data)) as image:
            upright = ImageOps.exif_transpose(image)
            out = io.BytesIO()
            kind = image.format or "PNG"
            options: dict[str, Any] = {"quality": 95} if kind == "JPEG" else {}
            upright.save(out, format=kind, **options)
            data = out.getvalue()
    outputs.write_new(folder, name, data)
