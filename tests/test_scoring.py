"""Scoring: IoU matching and F1 for boxes, hit rate for points, and the answer match rules."""

from __future__ import annotations

import pytest

from moondream_mcp.scoring import (
    DetectScore,
    PointScore,
    answer_correct,
    choose,
    f1,
    iou,
    match_boxes,
    normalize,
    score_detect,
    score_point,
)

A = (0.1, 0.1, 0.3, 0.3)
B = (0.6, 0.6, 0.9, 0.9)


def test_iou_of_a_box_with_itself_is_one_and_with_a_disjoint_box_zero() -> None:
    assert iou(A, A) == 1.0
    assert iou(A, B) == 0.0
    assert iou((0.0, 0.0, 0.2, 0.2), (0.1, 0.0, 0.3, 0.2)) == pytest.approx(1 / 3)


def test_boxes_are_matched_one_to_one_best_overlap_first() -> None:
    shifted = (0.12, 0.1, 0.32, 0.3)
    # Both predictions overlap A; only the better one gets it, the other matches nothing.
    assert sorted(match_boxes([shifted, A, B], [A, B])) == [(1, 0, 1.0), (2, 1, 1.0)]


def test_detect_score_charges_extra_and_missing_boxes() -> None:
    assert score_detect([A, B], [A, B]) == DetectScore(1.0, 2, 0, 0)
    assert score_detect([A], [A, B]) == DetectScore(0.5, 1, 0, 1)
    assert score_detect([A, B, (0.4, 0.4, 0.5, 0.5)], [A, B]) == DetectScore(pytest.approx(2 / 3), 2, 1, 0)
    assert score_detect([], []) == DetectScore(1.0, 0, 0, 0)


def test_a_match_below_the_iou_threshold_is_a_false_positive_and_a_miss() -> None:
    loose = (0.1, 0.1, 0.3, 0.55)  # IoU with A is 0.44
    score = score_detect([loose], [A])
    assert (score.tp, score.fp, score.fn) == (0, 1, 1)
    assert score.iou == pytest.approx(0.04 / 0.09)


def test_f1_counts_nothing_found_in_nothing_as_perfect() -> None:
    assert f1(0, 0, 0) == 1.0
    assert f1(2, 1, 1) == pytest.approx(2 / 3)


def test_a_point_hits_inside_a_label_box_or_within_the_radius_of_a_label_point() -> None:
    assert score_point([(0.2, 0.2)], boxes=[A]) == PointScore(1.0, 1)
    assert score_point([(0.5, 0.5)], boxes=[A]) == PointScore(0.0, 0)
    assert score_point([(0.52, 0.5)], points=[(0.5, 0.5)]) == PointScore(1.0, 1)
    assert score_point([(0.6, 0.5)], points=[(0.5, 0.5)]) == PointScore(0.0, 0)


def test_two_points_in_one_box_hit_it_once() -> None:
    assert score_point([(0.2, 0.2), (0.25, 0.25)], boxes=[A]) == PointScore(0.5, 1)
    assert score_point([(0.2, 0.2), (0.7, 0.7)], boxes=[A, B]) == PointScore(1.0, 2)


def test_normalize_drops_case_punctuation_and_articles_and_reads_number_words() -> None:
    assert normalize("  The Orange one. ") == "orange 1"
    assert normalize("Two") == normalize("2.") == "2"
    assert normalize("3.5 metres") == "3.5 metres"
    assert normalize("No") == "0"


@pytest.mark.parametrize(
    ("answer", "expected", "match", "right"),
    [
        ("Orange.", "orange", "normalized", True),
        ("Orange.", "orange", "exact", False),
        (" orange ", "orange", "exact", True),
        ("I see two orange shapes", "two", "contains", True),
        ("I see twenty shapes", "two", "contains", False),
        ("12 apples", r"\d+ apples?", "regex", True),
        ("about 12 apples", r"\d+ apples?", "regex", False),
        ("1", "one", "normalized", True),
    ],
)
def test_answers_are_judged_by_the_label_rule(answer: str, expected: str, match: str, right: bool) -> None:
    assert answer_correct(answer, expected, match) is right


def test_with_choices_the_answer_must_name_the_right_choice_and_only_it() -> None:
    choices = ["red", "orange", "yellow"]
    assert choose("It is orange.", choices) == "orange"
    assert choose("orange or yellow", choices) is None
    assert answer_correct("Definitely orange", "orange", choices=choices)
    assert not answer_correct("yellow", "orange", choices=choices)
    assert not answer_correct("orange or yellow", "orange", choices=choices)
