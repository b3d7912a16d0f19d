"""The emulated model's skill and how training moves it: pure functions, no HTTP."""

from __future__ import annotations

import math
import random
from statistics import mean, pstdev

import pytest

from moondream_emulator.model.policy import (
    BASE,
    HARD_COLOURS,
    LEARNING_SPEED,
    Policy,
    Sampling,
    agreement,
    confused,
    learn,
)
from moondream_emulator.model.vision import Box, Region, Scene
from moondream_emulator.tuning.rewards import iou

DIGEST = bytes(range(32))


def region(colour: str, box: tuple[float, float, float, float] = (0.3, 0.25, 0.6, 0.7)) -> Region:
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    return Region(colour, Box(*box), centre, (box[2] - box[0]) * (box[3] - box[1]), (), (1, 1))


def sampling(seed: int = 0, temperature: float = 1.0, top_p: float = 1.0) -> Sampling:
    return Sampling(temperature, top_p, random.Random(seed))


def test_the_base_model_sees_easy_colours_exactly() -> None:
    red = region("red")
    assert BASE.box(red, DIGEST) is red.box
    assert BASE.point(red, DIGEST) == red.centre
    assert BASE.confuses(Scene(100, 100, None, (red,)), DIGEST, "How many red?") is False


def test_the_base_model_shifts_hard_colours_by_their_base_error_in_a_direction_fixed_by_the_image() -> None:
    orange = region("orange")
    shifted = BASE.box(orange, DIGEST)
    dx, dy = shifted.x_min - orange.box.x_min, shifted.y_min - orange.box.y_min
    assert (shifted.x_max - orange.box.x_max, shifted.y_max - orange.box.y_max) == pytest.approx((dx, dy))
    assert math.hypot(dx, dy) == pytest.approx(HARD_COLOURS["orange"])
    assert BASE.box(orange, DIGEST) == shifted
    other = BASE.box(orange, bytes(32))
    assert other != shifted
    x, y = BASE.point(orange, DIGEST)
    assert (x - orange.centre[0], y - orange.centre[1]) == pytest.approx((dx, dy))


def test_a_shift_never_leaves_the_image() -> None:
    corner = region("purple", (0.0, 0.0, 0.05, 0.05))
    for i in range(20):
        digest = bytes([i]) * 32
        box = BASE.box(corner, digest)
        assert 0 <= box.x_min <= box.x_max <= 1 and 0 <= box.y_min <= box.y_max <= 1
        assert all(0 <= v <= 1 for v in BASE.point(corner, digest))


def test_a_smaller_scale_shrinks_the_systematic_error_in_proportion() -> None:
    orange = region("orange")
    half = Policy(0.5).point(orange, DIGEST)
    full = BASE.point(orange, DIGEST)
    assert math.dist(half, orange.centre) == pytest.approx(math.dist(full, orange.centre) / 2)


def test_temperature_zero_is_the_best_guess_and_sampling_spreads_with_scale_and_temperature() -> None:
    orange = region("orange")
    assert Policy(0.7).box(orange, DIGEST, sampling(temperature=0)) == Policy(0.7).box(orange, DIGEST)

    def spread(policy: Policy, temperature: float) -> float:
        rng = sampling(1, temperature)
        xs = [policy.point(orange, DIGEST, rng)[0] for _ in range(2000)]
        return pstdev(xs)

    assert spread(BASE, 1.0) == pytest.approx(0.02 + 0.08, rel=0.1)
    assert spread(Policy(0.5), 1.0) == pytest.approx(0.05, rel=0.1)
    assert spread(BASE, 0.5) == pytest.approx(0.05, rel=0.1)
    red, rng = region("red"), sampling(2)
    red_xs = [BASE.point(red, DIGEST, rng)[0] for _ in range(2000)]
    assert pstdev(red_xs) == pytest.approx(0.02, rel=0.1)


def test_answers_hinging_on_a_hard_colour_are_wrong_about_as_often_as_the_scale_says() -> None:
    scene = Scene(100, 100, None, (region("orange"), region("red", (0.7, 0.7, 0.9, 0.9))))
    questions = [f"How many orange shapes? ({i})" for i in range(2000)]
    base_rate = mean(BASE.confuses(scene, DIGEST, q) for q in questions)
    tuned_rate = mean(Policy(0.2).confuses(scene, DIGEST, q) for q in questions)
    assert base_rate == pytest.approx(0.5, abs=0.04) and tuned_rate == pytest.approx(0.1, abs=0.03)
    # Deterministic per question at temperature 0; drawn afresh when sampling.
    assert [BASE.confuses(scene, DIGEST, q) for q in questions[:50]] == [
        BASE.confuses(scene, DIGEST, q) for q in questions[:50]
    ]
    rng = sampling(3)
    assert 0.4 < mean(BASE.confuses(scene, DIGEST, questions[0], rng) for _ in range(1000)) < 0.6
    assert [r.colour for r in confused(scene).regions] == ["yellow", "red"]


def test_agreement_is_the_correlation_of_rewards_with_rollout_quality() -> None:
    errors = [0.1, 0.4, 0.2, 0.8]
    assert agreement([1 - e for e in errors], errors) == pytest.approx(1)
    assert agreement(errors, errors) == pytest.approx(-1)
    assert agreement([0.5] * 4, errors) == 0
    assert agreement([1, 0, 1, 0], [0.3] * 4) == 0
    assert agreement([1.0], [0.2]) == 0


def test_learning_shrinks_the_scale_for_agreement_grows_it_for_disagreement_and_keeps_it_for_none() -> None:
    assert learn(1.0, [1.0]) == pytest.approx(math.exp(-LEARNING_SPEED))
    assert learn(1.0, [-1.0]) == pytest.approx(math.exp(LEARNING_SPEED))
    assert learn(1.0, [0.0]) == 1.0 and learn(1.0, []) == 1.0
    scale = 1.0
    for _ in range(10):
        scale = learn(scale, [0.9])
    assert 0.4 < scale < 0.6  # ten steps of good rewards roughly halve the error


def test_the_learning_rate_matters_mildly() -> None:
    default = -math.log(learn(1.0, [1.0]))
    assert 1.5 < -math.log(learn(1.0, [1.0], lr=16 * 2e-4)) / default < 3
    assert 0.3 < -math.log(learn(1.0, [1.0], lr=2e-4 / 16)) / default < 0.7


def test_an_sft_group_counts_as_a_weak_positive_signal() -> None:
    from moondream_emulator.model.policy import SFT_AGREEMENT

    assert 0 < SFT_AGREEMENT < 0.5
    assert learn(1.0, [SFT_AGREEMENT]) < 1.0


def test_shuffled_rewards_leave_the_scale_where_it_was_on_average() -> None:
    rng = random.Random(11)
    orange = region("orange")
    changes = []
    for _ in range(3000):
        boxes = [BASE.box(orange, DIGEST, Sampling(1.0, 1.0, rng)) for _ in range(4)]
        errors = [1 - iou(b, orange.box) for b in boxes]
        rewards = rng.sample([1 - e for e in errors], 4)
        changes.append(math.log(learn(1.0, [agreement(rewards, errors)])))
    assert abs(mean(changes)) < 0.1 * LEARNING_SPEED
    truthful = math.log(learn(1.0, [agreement([1 - e for e in errors], errors)]))
    assert truthful == pytest.approx(-LEARNING_SPEED)


def test_the_scale_stays_within_bounds() -> None:
    assert learn(0.05, [1.0] * 3) == 0.05
    assert learn(4.0, [-1.0]) == 4.0
