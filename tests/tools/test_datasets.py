"""The dataset tools through the protocol: import from COCO, inspect, refuse what is broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from tests.support.calls import call, refusal, unique
from tests.support.labelled import as_box, write_jsonl
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio


async def test_a_coco_file_imports_as_detect_lines_that_inspect_as_ready(client: Client, workdir: Path) -> None:
    (workdir / "coco").mkdir()
    save(canvas((200, 100), [("red", (0.1, 0.1, 0.6, 0.6))]), workdir / "coco" / "one.png")
    save(canvas((100, 100), [("blue", (0.2, 0.2, 0.4, 0.4))]), workdir / "coco" / "two.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "one.png", "width": 200, "height": 100},
            {"id": 2, "file_name": "two.png", "width": 100, "height": 100},
        ],
        "categories": [{"id": 1, "name": "red box"}, {"id": 2, "name": "blue box"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 100, 50]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [20, 20, 20, 20]},
        ],
    }
    (workdir / "coco" / "instances.json").write_text(json.dumps(coco))
    out = await call(
        client,
        "import_dataset",
        source=str(workdir / "coco" / "instances.json"),
        format="coco",
        output=str(workdir / "boxes.jsonl"),
    )
    assert (out["examples"], out["images"], out["objects"]) == (2, 2, {"red box": 1, "blue box": 1})
    lines = [json.loads(line) for line in (workdir / "boxes.jsonl").read_text().splitlines()]
    assert len({line.pop("job") for line in lines}) == 1  # every line names the import that wrote it
    assert lines[0] == {
        "image": "coco/one.png",
        "skill": "detect",
        "object": "red box",
        "boxes": [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.6, "y_max": 0.6}],
    }

    report = await call(client, "inspect_dataset", path=str(workdir / "boxes.jsonl"))
    assert report["ready"] is True and report["problems"] == []
    assert report["counts"]["skill"] == {"detect": 2}
    assert sorted(report["counts"]["split"].values()) == [1, 1]  # two images: one held out for eval


async def test_import_refuses_to_write_outside_the_allowed_directories(
    client: Client, workdir: Path, tmp_path: Path
) -> None:
    (workdir / "yolo").mkdir()
    text = await refusal(
        client,
        "import_dataset",
        source=str(workdir / "yolo"),
        format="yolo",
        output=str(tmp_path / "elsewhere.jsonl"),
        classes=["a"],
    )
    assert "outside the allowed directories" in text
    assert not (tmp_path / "elsewhere.jsonl").exists()


async def test_inspect_lists_each_problem_and_a_run_with_problems_is_refused(
    client: Client, workdir: Path, emulator
) -> None:
    save(canvas(), workdir / "good.png")
    (workdir / "broken.png").write_text("not an image")
    path = write_jsonl(
        workdir / "bad.jsonl",
        [
            {"image": "good.png", "skill": "detect", "object": "red", "boxes": [as_box((0.25, 0.2, 0.5, 0.6))]},
            {"image": "missing.png", "skill": "detect", "object": "red", "boxes": [as_box((0.25, 0.2, 0.5, 0.6))]},
            {"image": "broken.png", "skill": "detect", "object": "red", "boxes": [as_box((0.25, 0.2, 0.5, 0.6))]},
            {"image": "good.png", "skill": "detect", "object": "red", "boxes": [[0.5, 0.2, 0.25, 0.6]]},
            {"image": "good.png", "skill": "point", "object": "red", "points": [[0.5, 1.2]]},
            {"image": "good.png", "skill": "query", "question": "What colour?", "answer": ""},
        ],
    )
    report = await call(client, "inspect_dataset", path=str(path))
    assert report["ready"] is False and report["problem_count"] == 5
    assert [(p["line"], p["problem"].split(":")[0]) for p in report["problems"]] == [
        (4, "box [0.5, 0.2, 0.25, 0.6] is inverted or empty"),
        (5, "point [0.5, 1.2] is out of range"),
        (6, "empty label"),
        (2, "file not found"),
        (3, "unreadable image"),
    ]
    assert report["examples"] == 3 and len(report["samples"]) == 3

    text = await refusal(client, "start_training", dataset=str(path), name=unique("refused"), steps=2)
    assert "5 problem(s)" in text and "line 4" in text and "inspect_dataset" in text
    assert not [r for r in emulator.emulator.requests if "/tuning/" in r.path]
