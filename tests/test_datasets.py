"""Datasets: the JSONL format and its problems, the deterministic split by image, and COCO / YOLO imports."""

from __future__ import annotations

import json
from pathlib import Path

from moondream_mcp import datasets
from moondream_mcp.datasets import Example, Problem
from moondream_mcp.files import FileGuard

BASE = Path("/data/set")


def parse(*records: object) -> tuple[list[Example], list[Problem]]:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records)
    examples, problems, _ = datasets.parse(text, BASE)
    return examples, problems


def test_each_skill_parses_with_its_label_and_images_resolve_against_the_file() -> None:
    examples, problems = parse(
        {"image": "a.png", "skill": "detect", "object": "car", "boxes": [[0.1, 0.2, 0.3, 0.4]], "split": "eval"},
        {"image": "/abs/b.png", "skill": "point", "object": "door", "points": [{"x": 0.5, "y": 0.5}]},
        {
            "image": "https://example.com/c.jpg",
            "skill": "query",
            "question": "How many?",
            "answer": "3",
            "match": "exact",
            "choices": ["2", "3"],
        },
    )
    assert problems == []
    assert examples == [
        Example(1, "a.png", "/data/set/a.png", "detect", object="car", boxes=((0.1, 0.2, 0.3, 0.4),), split="eval"),
        Example(2, "/abs/b.png", "/abs/b.png", "point", object="door", points=((0.5, 0.5),)),
        Example(
            3,
            "https://example.com/c.jpg",
            "https://example.com/c.jpg",
            "query",
            question="How many?",
            answer="3",
            match="exact",
            choices=("2", "3"),
        ),
    ]
    assert [Example.from_json(json.loads(json.dumps(e.to_json()))) for e in examples] == examples


def test_every_broken_line_is_a_problem_with_its_line_number() -> None:
    examples, problems = parse(
        "not json",
        {"image": "a.png", "skill": "detect", "object": "car", "boxes": [[0.1, 0.2, 1.3, 0.4]]},
        {
            "image": "a.png",
            "skill": "detect",
            "object": "car",
            "boxes": [{"x_min": 0.5, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}],
        },
        {"image": "a.png", "skill": "query", "question": "What?", "answer": "  "},
        {"image": "a.png", "skill": "point", "object": "car", "points": []},
        {"image": "a.png", "skill": "caption"},
        {"image": "a.png", "skill": "query", "question": "What?", "answer": "(", "match": "regex"},
        {"skill": "detect", "object": "car", "boxes": []},
        {"image": "a.png", "skill": "detect", "object": "car", "boxes": []},
    )
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (1, "not JSON"),
        (2, "box [0.1, 0.2, 1.3, 0.4] is out of range"),
        (3, "box [0.5, 0.2, 0.3, 0.4] is inverted or empty"),
        (4, "empty label"),
        (5, "empty label"),
        (6, "`skill` must be one of query, point, detect"),
        (7, "invalid regex '('"),
        (8, "missing `image`"),
    ]
    assert [e.line for e in examples] == [9]  # boxes: [] says the object is absent: a valid negative


def test_an_image_given_both_splits_is_a_problem() -> None:
    _, problems = parse(
        {"image": "a.png", "skill": "query", "question": "Q1", "answer": "x", "split": "train"},
        {"image": "a.png", "skill": "query", "question": "Q2", "answer": "y", "split": "eval"},
    )
    assert problems == [Problem(1, "image /data/set/a.png is in both the train and the eval split")]


def _queries(images: int, per_image: int = 2) -> list[Example]:
    return [
        Example(i * per_image + q + 1, f"{i}.png", f"/d/{i}.png", "query", question=f"q{q}", answer="a")
        for i in range(images)
        for q in range(per_image)
    ]


def test_the_automatic_split_is_by_image_deterministic_and_holds_out_a_fifth() -> None:
    examples = _queries(20)
    first = datasets.assign_splits(examples)
    assert first == datasets.assign_splits(list(examples))
    by_image: dict[str, set[str]] = {}
    for e in first:
        by_image.setdefault(e.ref, set()).add(e.split or "")
    assert all(len(s) == 1 for s in by_image.values())
    assert sum(s == {"eval"} for s in by_image.values()) == 4
    assert datasets.assign_splits(examples, seed=1) != first


def test_a_small_dataset_still_holds_out_one_image_and_given_splits_stay() -> None:
    two = datasets.assign_splits(_queries(2))
    assert {e.ref: e.split for e in two} in (
        {"/d/0.png": "train", "/d/1.png": "eval"},
        {"/d/0.png": "eval", "/d/1.png": "train"},
    )
    given = [e if e.ref != "/d/0.png" else Example(**{**e.to_json(), "split": "train"}) for e in _queries(5)]
    assigned = datasets.assign_splits(given)
    assert {e.split for e in assigned if e.ref == "/d/0.png"} == {"train"}
    assert {e.split for e in assigned} == {"train", "eval"}


def test_coco_boxes_become_normalized_detect_examples_per_image_and_category(tmp_path: Path) -> None:
    coco = {
        "images": [
            {"id": 1, "file_name": "one.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "two.jpg", "width": 100, "height": 100},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [20, 10, 100, 50]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10]},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [50, 50, 50, 50]},
            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [10, 10, 20, 20], "iscrowd": 1},
            {"id": 5, "image_id": 3, "category_id": 9, "bbox": [10, 10, 20, 20]},
        ],
    }
    out = datasets.from_coco(coco, image_dir=tmp_path / "imgs", output_dir=tmp_path, split="eval")
    assert out.records == [
        {
            "image": "imgs/one.jpg",
            "skill": "detect",
            "object": "cat",
            "split": "eval",
            "boxes": [
                {"x_min": 0.1, "y_min": 0.1, "x_max": 0.6, "y_max": 0.6},
                {"x_min": 0.0, "y_min": 0.0, "x_max": 0.05, "y_max": 0.1},
            ],
        },
        {
            "image": "imgs/one.jpg",
            "skill": "detect",
            "object": "dog",
            "split": "eval",
            "boxes": [{"x_min": 0.25, "y_min": 0.5, "x_max": 0.5, "y_max": 1.0}],
        },
    ]
    assert (out.images, out.skipped_count) == (1, 2)


def test_a_yolo_folder_imports_with_class_names_and_splits_from_subfolders(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: person\n  1: 'bicycle'\n")
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    (tmp_path / "images" / "train" / "a.jpg").write_bytes(b"x")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n0 0.1 0.1 0.2 0.2\n")
    (tmp_path / "images" / "val" / "b.png").write_bytes(b"x")
    (tmp_path / "labels" / "val" / "b.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    (tmp_path / "images" / "val" / "c.png").write_bytes(b"x")  # no label file
    out = datasets.from_yolo(FileGuard([tmp_path], 1 << 20), tmp_path, output_dir=tmp_path)
    assert out.records == [
        {
            "image": "images/train/a.jpg",
            "skill": "detect",
            "object": "person",
            "split": "train",
            "boxes": [
                {"x_min": 0.4, "y_min": 0.3, "x_max": 0.6, "y_max": 0.7},
                {"x_min": 0.0, "y_min": 0.0, "x_max": 0.2, "y_max": 0.2},
            ],
        },
        {
            "image": "images/train/a.jpg",
            "skill": "detect",
            "object": "bicycle",
            "split": "train",
            "boxes": [{"x_min": 0.2, "y_min": 0.2, "x_max": 0.3, "y_max": 0.3}],
        },
    ]
    assert out.skipped_count == 2 and out.images == 1


def test_yolo_class_names_are_read_from_any_common_spelling() -> None:
    assert datasets._yaml_names("names: [a, 'b c']\n") == ["a", "b c"]
    assert datasets._yaml_names("nc: 2\nnames:\n- a\n- b\n") == ["a", "b"]
    assert datasets._yaml_names("names: {1: b, 0: a}\n") == ["a", "b"]
