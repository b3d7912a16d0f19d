"""Labelling photos into a dataset through the protocol: label_images (both engines), review_labels,
fix_labels and export_dataset."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from moondream_mcp import datasets
from tests.support.calls import call, refusal
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio

RED = (0.1, 0.2, 0.4, 0.6)
BLUE = (0.55, 0.3, 0.9, 0.8)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def close(box: dict, expected: tuple[float, float, float, float], tolerance: float = 0.02) -> bool:
    got = (box["x_min"], box["y_min"], box["x_max"], box["y_max"])
    return all(abs(a - e) <= tolerance for a, e in zip(got, expected))


def shoot(folder: Path) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """Three photos: red and blue, red only (stored sideways with an EXIF turn), and blue only."""
    folder.mkdir(parents=True, exist_ok=True)
    save(canvas((400, 300), [("red", RED), ("blue", BLUE)]), folder / "both.png")
    sideways = canvas((400, 300), [("red", RED)]).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90° clockwise: displayed, it is the 400x300 picture
    save(sideways, folder / "phone.jpg", exif=exif, quality=95)
    save(canvas((400, 300), [("blue", BLUE)]), folder / "sky.png")
    return {
        "both.png": [("red", RED), ("blue", BLUE)],
        "phone.jpg": [("red", RED)],
        "sky.png": [("blue", BLUE)],
    }


async def test_label_images_writes_one_unreviewed_example_per_image_and_class_in_displayed_orientation(
    client: Client, workdir: Path, emulator
) -> None:
    truth = shoot(workdir / "shoot")
    out = await call(
        client, "label_images", images=str(workdir / "shoot"), classes=["red", "blue"], output=str(workdir / "d.jsonl")
    )
    assert (out["status"], out["images"], out["labelled"], out["examples"], out["failed"]) == ("done", 3, 3, 6, 0)
    assert {c["name"]: (c["examples"], c["empty"], c["found"]) for c in out["classes"]} == {
        "red": (3, 1, 2),
        "blue": (3, 1, 2),
    }
    examples = lines(workdir / "d.jsonl")
    assert sorted((e["image"], e["object"]) for e in examples) == sorted(
        (f"shoot/{name}", cls) for name in truth for cls in ("red", "blue")
    )
    for e in examples:
        assert (e["skill"], e["reviewed"], e["labelled_by"]) == ("detect", False, "moondream3-preview")
        expected = [box for colour, box in truth[e["image"].split("/")[1]] if colour == e["object"]]
        assert len(e["boxes"]) == len(expected) and all(close(b, x) for b, x in zip(e["boxes"], expected)), e
    # Each class is its own prompt: never "red, blue" in one request.
    asked = [r.json["object"] for r in emulator.emulator.requests if r.path.endswith("/detect")]
    assert sorted(asked) == ["blue"] * 3 + ["red"] * 3
    report = await call(client, "inspect_dataset", path=str(workdir / "d.jsonl"))
    assert report["ready"] and report["examples"] == 6


async def test_a_rerun_labels_only_what_is_missing_and_a_new_class_only_adds_its_examples(
    client: Client, workdir: Path, emulator
) -> None:
    shoot(workdir / "shoot")
    dataset = str(workdir / "d.jsonl")
    emulator.emulator.inject(400, path="/detect")  # one image fails: a refusal is not retried
    first = await call(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=dataset)
    assert (first["labelled"], first["failed"], first["examples"]) == (2, 1, 2)
    assert first["failures"][0]["count"] == 1

    emulator.emulator.clear()
    second = await call(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=dataset)
    assert (second["labelled"], second["skipped"], second["examples"]) == (1, 2, 1)
    assert len([r for r in emulator.emulator.requests if r.path.endswith("/detect")]) == 1

    emulator.emulator.clear()
    third = await call(client, "label_images", images=str(workdir / "shoot"), classes=["red", "blue"], output=dataset)
    assert (third["labelled"], third["examples"]) == (3, 3)
    assert [r.json["object"] for r in emulator.emulator.requests if r.path.endswith("/detect")] == ["blue"] * 3
    assert len(lines(workdir / "d.jsonl")) == 6


async def test_point_labels_record_an_empty_list_where_nothing_was_found(client: Client, workdir: Path) -> None:
    shoot(workdir / "shoot")
    out = await call(
        client,
        "label_images",
        images=str(workdir / "shoot"),
        classes=["red"],
        skill="point",
        output=str(workdir / "p.jsonl"),
    )
    assert out["examples"] == 3
    points = {e["image"]: e["points"] for e in lines(workdir / "p.jsonl")}
    assert points["shoot/sky.png"] == []
    centre = ((RED[0] + RED[2]) / 2, (RED[1] + RED[3]) / 2)
    for name in ("shoot/both.png", "shoot/phone.jpg"):
        [p] = points[name]
        assert abs(p["x"] - centre[0]) < 0.02 and abs(p["y"] - centre[1]) < 0.02
    assert (await call(client, "inspect_dataset", path=str(workdir / "p.jsonl")))["ready"]


async def test_the_batch_api_engine_writes_the_same_dataset_when_its_results_arrive(
    client: Client, workdir: Path, emulator
) -> None:
    shoot(workdir / "shoot")
    local = await call(
        client, "label_images", images=str(workdir / "shoot"), classes=["red", "blue"], output=str(workdir / "l.jsonl")
    )
    args = {"images": str(workdir / "shoot"), "classes": ["red", "blue"], "output": str(workdir / "b.jsonl")}
    submitted = await call(client, "label_images", engine="batch_api", **args)
    assert submitted["status"] in ("submitted", "done") and submitted["batch_id"]
    uploaded = [r for r in emulator.emulator.requests if r.method == "PUT"]
    assert uploaded, "sent through the Batch API"
    if submitted["status"] != "done":
        written = await call(client, "label_images", engine="batch_api", wait_seconds=30, **args)
        assert (written["status"], written["batch_id"]) == ("done", submitted["batch_id"])
    else:
        written = submitted
    assert (written["examples"], written["labelled"]) == (local["examples"], 3)

    def key(e: dict) -> tuple:
        return (e["image"], e["object"])

    batch_lines = sorted(lines(workdir / "b.jsonl"), key=key)
    local_lines = sorted(lines(workdir / "l.jsonl"), key=key)
    assert [key(e) for e in batch_lines] == [key(e) for e in local_lines]
    for ours, theirs in zip(batch_lines, local_lines):
        assert len(ours["boxes"]) == len(theirs["boxes"]) and all(
            close(x, (y["x_min"], y["y_min"], y["x_max"], y["y_max"]), 0.001)
            for x, y in zip(ours["boxes"], theirs["boxes"])
        )
        assert ours["reviewed"] is False
    again = await call(client, "label_images", engine="batch_api", **args)
    assert (again["status"], again["skipped"], again["examples"]) == ("done", 3, 0)


async def test_an_output_that_is_not_a_label_images_dataset_is_refused_and_left_untouched(
    client: Client, workdir: Path
) -> None:
    shoot(workdir / "shoot")
    notes = workdir / "notes.jsonl"
    notes.write_text("dear diary\n")
    text = await refusal(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=str(notes))
    assert "left untouched" in text
    assert notes.read_text() == "dear diary\n"
    photo = workdir / "shoot" / "both.png"
    before = photo.read_bytes()
    text = await refusal(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=str(photo))
    assert photo.read_bytes() == before
    # A dataset is not label_images' to add to unless label_images wrote it: a hand-made one is someone's
    # work, and an imported one is import_dataset's output (outputs never destroy).
    hand = workdir / "hand.jsonl"
    hand.write_text(json.dumps({"image": "shoot/sky.png", "skill": "detect", "object": "blue", "boxes": [BLUE]}) + "\n")
    before = hand.read_bytes()
    text = await refusal(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=str(hand))
    assert "not an earlier label_images output" in text and hand.read_bytes() == before
    await call(client, "export_dataset", dataset=str(hand), format="yolo", output=str(workdir / "y"))
    imported = workdir / "imported.jsonl"
    await call(client, "import_dataset", source=str(workdir / "y"), format="yolo", output=str(imported))
    before = imported.read_bytes()
    text = await refusal(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=str(imported))
    assert "not an earlier label_images output" in text and imported.read_bytes() == before
    assert not (workdir / "new.png").exists()
    text = await refusal(
        client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=str(workdir / "new.png")
    )
    assert "give a .jsonl path" in text and not (workdir / "new.png").exists()


async def test_a_reviewed_dataset_stays_label_images_own_to_add_to(client: Client, workdir: Path) -> None:
    shoot(workdir / "shoot")
    dataset = workdir / "d.jsonl"
    await call(client, "label_images", images=str(workdir / "shoot"), classes=["red"], output=str(dataset))
    first = dataset.read_bytes().splitlines()
    assert all(line.startswith(b'{"job":"') for line in first)
    await call(
        client,
        "fix_labels",
        dataset=str(dataset),
        fixes=[{"lines": [1], "action": "none"}, {"lines": [2, 3], "action": "accept"}],
    )
    reviewed = dataset.read_bytes().splitlines()
    assert [line[: line.index(b",")] for line in reviewed] == [line[: line.index(b",")] for line in first]
    more = await call(
        client, "label_images", images=str(workdir / "shoot"), classes=["red", "blue"], output=str(dataset)
    )
    assert (more["skipped"], more["labelled"], more["examples"]) == (0, 3, 3)
    after = dataset.read_bytes().splitlines()
    assert after[:3] == reviewed and len(after) == 6
    assert [json.loads(line)["object"] for line in after[3:]] == ["blue"] * 3


async def labelled(client: Client, workdir: Path) -> Path:
    shoot(workdir / "shoot")
    dataset = workdir / "d.jsonl"
    await call(client, "label_images", images=str(workdir / "shoot"), classes=["red", "blue"], output=str(dataset))
    return dataset


async def test_review_labels_shows_a_page_as_numbered_contact_sheets_mapped_to_lines(
    client: Client, workdir: Path, tmp_path: Path
) -> None:
    dataset = await labelled(client, workdir)
    result = await client.call_tool("review_labels", {"dataset": str(dataset), "per_page": 4})
    assert not result.is_error, result.content[0].text
    page = result.structured_content
    assert (page["page"], page["pages"], page["matching"], page["unreviewed"]) == (1, 2, 6, 6)
    assert [c["cell"] for c in page["cells"]] == [1, 2, 3, 4]
    written = lines(dataset)
    for cell in page["cells"]:
        example = written[cell["line"] - 1]
        assert (cell["image"], cell["object"], cell["reviewed"]) == (example["image"], example["object"], False)
        assert cell["labels"] == [
            [round(b[k], 3) for k in ("x_min", "y_min", "x_max", "y_max")] for b in example["boxes"]
        ]
    [sheet] = page["sheets"]
    assert sheet["cells"] == [1, 2, 3, 4]
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/jpeg"
    saved = Path(sheet["path"])
    assert saved.is_relative_to(tmp_path / "data") and 0 < saved.stat().st_size <= 1_000_000
    with Image.open(saved) as picture:
        assert picture.width == 4 * 256 + 5 * 4

    second = await call(client, "review_labels", dataset=str(dataset), per_page=4, page=2)
    assert [c["cell"] for c in second["cells"]] == [5, 6]
    assert {c["line"] for c in second["cells"]}.isdisjoint(c["line"] for c in page["cells"])
    nothing = await call(client, "review_labels", dataset=str(dataset), found="nothing")
    assert sorted((c["image"], c["object"]) for c in nothing["cells"]) == [
        ("shoot/phone.jpg", "blue"),
        ("shoot/sky.png", "red"),
    ]
    red = await call(client, "review_labels", dataset=str(dataset), object="RED", found="many", many=1)
    assert sorted(c["image"] for c in red["cells"]) == ["shoot/both.png", "shoot/phone.jpg"]
    text = await refusal(client, "review_labels", dataset=str(dataset), page=3, per_page=4)
    assert "past the last page (2)" in text


async def test_fix_labels_records_every_change_in_its_line_and_loses_nothing(client: Client, workdir: Path) -> None:
    dataset = await labelled(client, workdir)
    before = dataset.read_bytes().splitlines()
    written = lines(dataset)
    at = {(e["image"], e["object"]): i + 1 for i, e in enumerate(written)}
    both_red, both_blue = at[("shoot/both.png", "red")], at[("shoot/both.png", "blue")]
    phone_red, sky_red = at[("shoot/phone.jpg", "red")], at[("shoot/sky.png", "red")]
    sky_blue = at[("shoot/sky.png", "blue")]
    fixed = await call(
        client,
        "fix_labels",
        dataset=str(dataset),
        fixes=[
            {"lines": [both_red, sky_red], "action": "accept"},
            {"lines": [both_blue], "action": "replace", "boxes": [[0.5, 0.25, 0.95, 0.85], [0.0, 0.0, 0.1, 0.1]]},
            {"lines": [both_blue], "action": "drop", "drop": [2]},
            {"lines": [phone_red], "action": "none"},
            {"lines": [sky_blue], "action": "remove"},
        ],
    )
    assert (fixed["lines"], fixed["unreviewed"]) == (5, 1)
    assert fixed["changed"] == {"accept": 2, "replace": 1, "drop": 1, "none": 1, "remove": 1}
    after = dataset.read_bytes().splitlines()
    assert len(after) == len(before)
    untouched = [i for i in range(len(before)) if i + 1 not in (both_red, sky_red, both_blue, phone_red, sky_blue)]
    assert [after[i] for i in untouched] == [before[i] for i in untouched]
    now = lines(dataset)
    model_blue = written[both_blue - 1]["boxes"]
    assert now[both_blue - 1]["boxes"] == [[0.5, 0.25, 0.95, 0.85]]
    assert now[both_blue - 1]["history"] == [
        {"fix": "replace", "before": {"boxes": model_blue}},
        {"fix": "drop", "before": {"boxes": [[0.5, 0.25, 0.95, 0.85], [0.0, 0.0, 0.1, 0.1]]}},
    ]
    assert now[phone_red - 1]["boxes"] == [] and now[phone_red - 1]["history"][0]["before"] == {
        "boxes": written[phone_red - 1]["boxes"]
    }
    assert now[both_red - 1] == {**written[both_red - 1], "reviewed": True, "history": [{"fix": "accept"}]}
    assert now[sky_blue - 1] == {
        **written[sky_blue - 1],
        "reviewed": True,
        "history": [{"fix": "remove"}],
        "removed": True,
    }
    report = await call(client, "inspect_dataset", path=str(dataset))
    assert report["ready"] and report["examples"] == 5  # the removed line stays, but is no example
    remaining = await call(client, "review_labels", dataset=str(dataset), unreviewed=True)
    assert [c["line"] for c in remaining["cells"]] == [at[("shoot/phone.jpg", "blue")]]


async def test_a_fix_that_cannot_apply_is_refused_and_the_file_is_untouched(client: Client, workdir: Path) -> None:
    dataset = await labelled(client, workdir)
    before = dataset.read_bytes()
    at = {(e["image"], e["object"]): i + 1 for i, e in enumerate(lines(dataset))}
    both_red = at[("shoot/both.png", "red")]
    cases = [
        (
            [{"lines": [both_red], "action": "accept"}, {"lines": [both_red], "action": "drop", "drop": [3]}],
            "no number 3",
        ),
        ([{"lines": [99], "action": "accept"}], "not in the file"),
        ([{"lines": [both_red], "action": "replace", "boxes": [[0.5, 0.2, 0.1, 0.4]]}], "inverted"),
        ([{"lines": [both_red], "action": "replace", "points": [[0.5, 0.2]]}], "detect example"),
        ([{"lines": [both_red], "action": "drop"}], "needs the numbers"),
    ]
    for fixes, expected in cases:
        text = await refusal(client, "fix_labels", dataset=str(dataset), fixes=fixes)
        assert expected in text, text
    assert dataset.read_bytes() == before


def as_tuple(box: dict | list) -> tuple[float, ...]:
    return tuple(box[k] for k in ("x_min", "y_min", "x_max", "y_max")) if isinstance(box, dict) else tuple(box)


def examples_by_name(path: Path, splits: dict[int, str] | None = None) -> set[tuple]:
    """(file name, object, boxes, split) of every example: what a round trip must keep."""
    return {
        (
            Path(e["image"]).name,
            e["object"],
            tuple(sorted(as_tuple(b) for b in e["boxes"])),
            splits[i] if splits is not None else e["split"],
        )
        for i, e in enumerate(lines(path), start=1)
    }


def assigned_splits(dataset: Path) -> dict[int, str]:
    """The split each line gets in training: the eval split is what evaluate scores on."""
    examples, _, _ = datasets.parse(dataset.read_text(), dataset.parent)
    return {e.line: e.split for e in datasets.assign_splits(examples)}


@pytest.mark.parametrize("format", ["coco", "yolo"])
async def test_an_export_round_trips_through_import_dataset_unchanged(
    client: Client, workdir: Path, format: str
) -> None:
    dataset = await labelled(client, workdir)
    splits = assigned_splits(dataset)
    assert set(splits.values()) == {"train", "eval"}
    exported = await call(client, "export_dataset", dataset=str(dataset), format=format, output=str(workdir / "out"))
    assert (exported["images"], exported["boxes"], exported["classes"]) == (3, 4, ["red", "blue"])
    assert exported["splits"] == {"train": 2, "eval": 1}
    back = workdir / "back.jsonl"
    if format == "yolo":
        await call(
            client, "import_dataset", source=str(workdir / "out"), format="yolo", output=str(back), negatives=True
        )
        imported = examples_by_name(back)
    else:
        imported = set()
        for folder, split in (("train", "train"), ("val", "eval")):
            source = workdir / "out" / folder / "_annotations.coco.json"
            back = workdir / f"back-{folder}.jsonl"  # each import its own output: never another job's file
            await call(
                client,
                "import_dataset",
                source=str(source),
                format="coco",
                output=str(back),
                split=split,
                negatives=True,
            )
            imported |= examples_by_name(back)
    assert imported == examples_by_name(dataset, splits)
    # The photo stored sideways was copied upright: tools that ignore EXIF see what the labels describe.
    [phone] = (workdir / "out").rglob("phone.jpg")
    with Image.open(phone) as upright:
        assert upright.size == (400, 300) and upright.getexif().get(0x0112, 1) == 1


async def test_a_voc_export_writes_1_based_pixel_corners_of_the_image_as_displayed(
    client: Client, workdir: Path
) -> None:
    shoot(workdir / "shoot")
    dataset = workdir / "exact.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"image": f"shoot/{name}", "skill": "detect", "object": colour, "boxes": [box]}) + "\n"
            for name, colour, box in [
                ("both.png", "red", RED),
                ("both.png", "blue", BLUE),
                ("phone.jpg", "red", RED),
                ("sky.png", "blue", BLUE),
            ]
        )
    )
    await call(client, "export_dataset", dataset=str(dataset), format="voc", output=str(workdir / "voc"))
    root = ET.parse(workdir / "voc" / "Annotations" / "both.xml").getroot()
    assert (root.findtext("filename"), root.findtext("size/width"), root.findtext("size/height")) == (
        "both.png",
        "400",
        "300",
    )
    corners = {
        o.findtext("name"): [int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        for o in root.iter("object")
    }
    assert corners == {"red": [41, 61, 160, 180], "blue": [221, 91, 360, 240]}
    assert (workdir / "voc" / "JPEGImages" / "both.png").is_file()
    listed = (workdir / "voc" / "ImageSets" / "Main" / "train.txt").read_text().split()
    listed += (workdir / "voc" / "ImageSets" / "Main" / "val.txt").read_text().split()
    assert sorted(listed) == ["both", "phone", "sky"]


async def test_an_export_never_overwrites_what_is_not_its_own(client: Client, workdir: Path) -> None:
    dataset = await labelled(client, workdir)
    foreign = workdir / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    text = await refusal(client, "export_dataset", dataset=str(dataset), format="yolo", output=str(foreign))
    assert "not an export of this server" in text
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    linked = await call(
        client, "export_dataset", dataset=str(dataset), format="yolo", output=str(workdir / "y"), images="link"
    )
    assert linked["rotated"] == 1  # the sideways photo, linked as it is stored
    image = workdir / "y" / "images" / "train" / "both.png"
    image = image if image.exists() else workdir / "y" / "images" / "val" / "both.png"
    assert image.is_symlink() and image.resolve() == (workdir / "shoot" / "both.png").resolve()
    (workdir / "y" / "README.txt").write_text("a person's note")
    again = await call(client, "export_dataset", dataset=str(dataset), format="yolo", output=str(workdir / "y"))
    assert again["files"] == linked["files"]
    assert not image.is_symlink() and image.read_bytes() == (workdir / "shoot" / "both.png").read_bytes()
    assert (workdir / "y" / "README.txt").read_text() == "a person's note"
    assert (workdir / "shoot" / "both.png").is_file()

    await call(client, "fix_labels", dataset=str(dataset), fixes=[{"lines": [1, 2], "action": "accept"}])
    reviewed = await call(
        client, "export_dataset", dataset=str(dataset), format="coco", output=str(workdir / "c"), reviewed_only=True
    )
    assert reviewed["images"] == 1


async def test_an_export_never_follows_a_link_planted_in_its_folder(client: Client, workdir: Path) -> None:
    dataset = await labelled(client, workdir)
    await call(client, "export_dataset", dataset=str(dataset), format="yolo", output=str(workdir / "y"))
    # The marker lists labels/train/*.txt as the export's own: swapping the folder for a link must not make
    # the next export remove or write files wherever the link leads.
    elsewhere = workdir / "elsewhere"
    (workdir / "y" / "labels" / "train").rename(elsewhere)
    (workdir / "y" / "labels" / "train").symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    text = await refusal(client, "export_dataset", dataset=str(dataset), format="yolo", output=str(workdir / "y"))
    assert "is not a folder" in text
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before
