"""Ground-truth rewards and ULIDs: the small pure pieces under the tuning API."""

from __future__ import annotations

import pytest

from moondream_emulator.ids import CROCKFORD, UlidGenerator, is_ulid, timestamp_ms
from moondream_emulator.model.vision import Box
from moondream_emulator.tuning.rewards import GroundTruth, box_reward, iou, point_reward

A = Box(0.1, 0.1, 0.3, 0.3)
B = Box(0.6, 0.6, 0.9, 0.9)


def test_iou_of_a_box_with_itself_is_one_and_with_a_disjoint_box_zero() -> None:
    assert iou(A, A) == 1 and iou(A, B) == 0
    assert iou(A, Box(0.2, 0.1, 0.4, 0.3)) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("predicted", "truth", "reward"),
    [
        ([], [], 1.0),
        ([A], [A], 1.0),
        ([A, B], [B, A], 1.0),  # order does not matter
        ([A], [], 0.0),
        ([], [A], 0.0),
        ([A], [A, B], 0.5),  # a missed box costs its share
        ([A, A], [A], 0.5),  # so does a duplicate: one truth box matches once
        ([Box(0.2, 0.1, 0.4, 0.3)], [A], 1 / 3),
    ],
)
def test_detect_rewards_match_boxes_greedily_by_overlap(predicted: list, truth: list, reward: float) -> None:
    assert box_reward(predicted, truth) == pytest.approx(reward)


@pytest.mark.parametrize(
    ("predicted", "truth", "reward"),
    [
        ([(0.5, 0.5)], GroundTruth(points=((0.5, 0.5),)), 1.0),
        ([(0.55, 0.5)], GroundTruth(points=((0.5, 0.5),)), 0.5),
        ([(0.7, 0.5)], GroundTruth(points=((0.5, 0.5),)), 0.0),
        ([(0.5, 0.5), (0.9, 0.9)], GroundTruth(points=((0.5, 0.5), (0.9, 0.9))), 1.0),
        ([(0.5, 0.5)], GroundTruth(points=((0.5, 0.5), (0.9, 0.9))), 0.5),
        ([], GroundTruth(points=()), 1.0),
        ([], GroundTruth(points=((0.5, 0.5),)), 0.0),
        ([(0.2, 0.2)], GroundTruth(boxes=(A,)), 1.0),
        ([(0.2, 0.2), (0.5, 0.5)], GroundTruth(boxes=(A, B)), 0.5),
        ([(0.5, 0.5)], GroundTruth(boxes=(A,)), 0.0),
    ],
)
def test_point_rewards_are_closeness_or_being_inside_times_a_count_penalty(
    predicted: list, truth: GroundTruth, reward: float
) -> None:
    assert point_reward(predicted, truth) == pytest.approx(reward)


def test_ulids_are_26_crockford_characters_that_sort_in_the_order_made() -> None:
    ids = UlidGenerator()
    same_ms = [ids.new(1_700_000_000_000) for _ in range(100)]
    later = ids.new(1_700_000_000_001)
    assert all(is_ulid(i) and len(i) == 26 and set(i) <= set(CROCKFORD) for i in same_ms)
    assert same_ms == sorted(same_ms) and len(set(same_ms)) == 100 and later > same_ms[-1]
    assert timestamp_ms(later) == 1_700_000_000_001
    # A clock going backwards does not break the order.
    assert ids.new(1_600_000_000_000) > later


@pytest.mark.parametrize(
    "text", ["", "01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAI", "81ARZ3NDEKTSV4RRFFQ69G5FAV", 7]
)
def test_anything_else_is_not_a_ulid(text: object) -> None:
    assert not is_ulid(text)
