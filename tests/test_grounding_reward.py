"""Box parsing, IoU via pycocotools (xywh conversion), scoring rules and grounding metrics."""

from __future__ import annotations

import math

import pytest
from pycocotools import mask as mask_utils

from lavida_envs.rewards import box_iou, grounding_metrics, parse_box
from lavida_envs.rewards.grounding import (
    format_box,
    intersection_union,
    parse_box_verbose,
    score_box_text,
    to_pixels,
)


def test_iou_matches_hand_computation_and_xywh_conversion():
    a, b = (2, 3, 10, 7), (6, 5, 12, 11)
    # intersection x 6..10, y 5..7 -> 4 * 2 = 8; areas 8 * 4 = 32 and 6 * 6 = 36
    assert box_iou(a, b) == pytest.approx(8 / 60, abs=1e-12)
    assert intersection_union(a, b) == (8.0, 60.0)
    # what pycocotools returns if xyxy were passed unconverted (treated as xywh): different
    wrong = float(mask_utils.iou([list(map(float, a))], [list(map(float, b))], [0])[0, 0])
    assert wrong != pytest.approx(8 / 60)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (2, 2, 8, 8)) == pytest.approx(36 / 100)


def test_box_shifted_by_half_its_width_scores_below_half():
    gold = (20, 20, 40, 60)
    shifted = (30, 20, 50, 60)
    assert box_iou(shifted, gold) == pytest.approx(1 / 3)
    assert box_iou(shifted, gold) < 0.5


def test_degenerate_or_nonfinite_boxes_have_zero_iou():
    assert box_iou((5, 5, 5, 9), (0, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, math.nan, 10), (0, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, math.inf, 10), (0, 0, 10, 10)) == 0.0


@pytest.mark.parametrize(
    "text, box",
    [
        ("<think>x</think><answer>[1, 2, 3, 4]</answer>", (1, 2, 3, 4)),
        ("<answer>(1.5,2,3,4.25)</answer>", (1.5, 2, 3, 4.25)),
        ('<answer>{"bbox_2d": [10, 20, 30, 40], "label": "cat"}</answer>', (10, 20, 30, 40)),
        ('```json\n[{"bbox_2d": [10, 20, 30, 40]}]\n```', (10, 20, 30, 40)),
        ("the box is [ 1 , 2 , 3 , 4 ] ", (1, 2, 3, 4)),
        ("\\boxed{[7, 8, 9, 10]}", (7, 8, 9, 10)),
        # reasoning boxes do not count once an <answer> block exists
        ("<think>[0, 0, 5, 5] or [1, 1, 6, 6]</think><answer>[2, 2, 7, 7]</answer>", (2, 2, 7, 7)),
        # the last answer block wins; an identical repeat is one box
        ("<answer>[0,0,1,1]</answer><answer>[3, 3, 9, 9] i.e. [3,3,9,9]</answer>", (3, 3, 9, 9)),
        ("<answer>[1e1, 2E0, 3.0e1, 4e1]</answer>", (10, 2, 30, 40)),
    ],
)
def test_parse_box_accepts_common_forms(text, box):
    assert parse_box(text) == tuple(float(v) for v in box)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<answer>no idea</answer>", "no box"),
        ("<answer>[1, 2, 3]</answer>", "no box"),
        ("<answer>[1, 2, 3, 4, 5]</answer>", "no box"),
        ("<answer>[1, 2, 3, 4] [5, 6, 7, 8]</answer>", "multiple boxes"),
        ('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [1, 2, 3, 5]}]', "multiple boxes"),
        ("<answer>[nan, 1, 2, 3]</answer>", "non-finite"),
        ("<answer>[1, 1, inf, 3]</answer>", "non-finite"),
        ("<answer>[1e999, 1, 2, 3]</answer>", "non-finite"),
        ("<answer>[9, 1, 2, 3]</answer>", "reversed corners"),
        ("<answer>[1, 9, 2, 3]</answer>", "reversed corners"),
        ("", "no box"),
    ],
)
def test_parse_box_rejects_with_a_reason(text, reason):
    box, error = parse_box_verbose(text)
    assert box is None and reason in error


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" * 5000,
        "[" * 10000 + "1, 2, 3, 4" + "]" * 10000,
        "[1," * 4000,
        "\\boxed{" * 3000,
        "<answer>" + "9" * 5000 + "</answer>",
        "<answer>[\u202e1, 2, 3, 4]</answer>\ud800",
        "__import__('os').system('echo hi')",
    ],
)
def test_hostile_strings_never_raise(text):
    box, error = parse_box_verbose(text)
    assert box is None or len(box) == 4
    iou, _, _ = score_box_text(text, (0, 0, 10, 10), 64, 64)
    assert 0.0 <= iou <= 1.0
    assert parse_box_verbose(None)[1] is not None  # type: ignore[arg-type]


def test_score_clips_to_the_image_and_reports_empty_boxes():
    gold = (0, 0, 10, 10)
    iou, pred, err = score_box_text("<answer>[-50, -50, 10, 10]</answer>", gold, 64, 64)
    assert (iou, pred, err) == (1.0, (0.0, 0.0, 10.0, 10.0), None)
    iou, pred, err = score_box_text("<answer>[70, 70, 90, 90]</answer>", gold, 64, 64)
    assert iou == 0.0 and "empty after clipping" in err


def test_more_boxes_never_beat_one_honest_box():
    gold = (10, 10, 30, 30)
    honest, _, _ = score_box_text("<answer>[12, 10, 32, 30]</answer>", gold, 64, 64)
    hedge, _, err = score_box_text("<answer>[10, 10, 30, 30], [12, 10, 32, 30]</answer>", gold, 64, 64)
    whole, _, _ = score_box_text("<answer>[0, 0, 64, 64]</answer>", gold, 64, 64)
    assert hedge == 0.0 and "multiple" in err
    assert honest > 0.8 > whole


@pytest.mark.parametrize("fmt", ["pixel", "norm1000", "norm1"])
@pytest.mark.parametrize("size", [64, 100, 128, 2000])
def test_every_box_format_round_trips_the_gold_exactly(fmt, size):
    gold = (3, size // 3, size // 2 + 1, size - 1)
    text = f"<answer>{format_box(gold, fmt, size, size)}</answer>"
    iou, pred, err = score_box_text(text, gold, size, size, fmt)
    assert err is None and pred == tuple(float(v) for v in gold) and iou == 1.0


def test_box_formats_are_read_in_their_own_units():
    gold = (32, 32, 64, 64)  # in a 128 px image
    assert to_pixels((250, 250, 500, 500), "norm1000", 128, 128) == gold
    assert score_box_text("[250, 250, 500, 500]", gold, 128, 128, "norm1000")[0] == 1.0
    assert score_box_text("[0.25, 0.25, 0.5, 0.5]", gold, 128, 128, "norm1")[0] == 1.0
    # the same numbers read as pixels are a different box
    assert score_box_text("[250, 250, 500, 500]", gold, 128, 128, "pixel")[0] == 0.0
    with pytest.raises(ValueError, match="box_format"):
        to_pixels((0, 0, 1, 1), "norm100", 10, 10)


def test_grounding_metrics_exact_values():
    golds = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 20, 20), (0, 0, 10, 10)]
    preds = [(0, 0, 10, 10), (5, 0, 15, 10), None, (0, 0, 10, 8)]
    m = grounding_metrics(preds, golds)
    ious = [1.0, 1 / 3, 0.0, 0.8]
    assert m["acc@0.5"] == 0.5 and m["acc@0.75"] == 0.5
    assert m["giou"] == pytest.approx(sum(ious) / 4) and m["mean_iou"] == m["giou"]
    inter = 100 + 50 + 0 + 80
    union = 100 + 150 + 400 + 100
    assert m["ciou"] == pytest.approx(inter / union)
    with pytest.raises(ValueError, match="pair up"):
        grounding_metrics(preds[:2], golds)
    assert grounding_metrics([], [])["acc@0.5"] == 0.0


def test_iou_floor_makes_a_whole_image_box_worth_only_the_format_term():
    """Issue 17 item 15: a content-free whole-image box used to out-score random boxes."""
    import gymnasium as gym

    from baselines.simple import RandomPolicy
    from lavida_envs.rewards.grounding import DEFAULT_IOU_FLOOR, iou_accuracy

    assert DEFAULT_IOU_FLOOR == 0.1
    assert iou_accuracy(0.09) == 0.0 and iou_accuracy(0.1) == 0.1 and iou_accuracy(0.6) == 0.6
    assert iou_accuracy(0.09, floor=0.0) == 0.09 and iou_accuracy(0.6, threshold=0.5) == 1.0
    assert iou_accuracy(float("nan")) == 0.0
    whole = "<think>all of it</think><answer>[0, 0, 128, 128]</answer>"
    env = gym.make("LaViDa/Grounding-v0", split="test", difficulty="mixed").unwrapped
    raw = gym.make("LaViDa/Grounding-v0", split="test", difficulty="mixed", iou_floor=0.0).unwrapped
    policy = RandomPolicy(seed=0)
    whole_rewards, random_rewards, raw_whole = [], [], []
    for i in range(40):
        obs, info = env.reset(options={"index": i})
        _, reward, _, _, step = env.step(whole)
        assert 0 < step["metrics"]["iou"] < DEFAULT_IOU_FLOOR  # overlaps a little, always
        whole_rewards.append(reward)
        raw.reset(options={"index": i})
        raw_whole.append(raw.step(whole)[1])
        _, reward, _, _, step = env.step(policy.act([obs])[0][0])
        random_rewards.append(reward)
        env.reset(options={"index": i})
        assert env.step(info["solution"])[1] == pytest.approx(1.0)  # the oracle keeps 1.0
    assert all(r == pytest.approx(0.1) for r in whole_rewards)  # format only
    assert sum(raw_whole) / 40 > 0.12  # what the floor removes (0.9 * mean IoU 0.03 + 0.1)
    assert max(random_rewards) <= 1.0


def test_iou_floor_kwarg_is_validated_and_shapes_only_accuracy():
    import gymnasium as gym

    env = gym.make("LaViDa/Grounding-v0", split="test", difficulty=1, iou_floor=0.5).unwrapped
    env.reset(options={"index": 3})
    x1, y1, x2, y2 = env.problem(3).meta["box"]
    dx = (x2 - x1) // 2 if x2 + (x2 - x1) // 2 <= 128 else -((x2 - x1) // 2)  # half a width off: IoU ~1/3
    _, _, _, _, step = env.step(f"<think>a</think><answer>[{x1 + dx}, {y1}, {x2 + dx}, {y2}]</answer>")
    iou = step["metrics"]["iou"]
    assert 0.1 < iou < 0.5 and step["reward_components"]["accuracy"] == 0.0
    for bad in (-0.1, 1.0, "0.2", True):
        with pytest.raises(ValueError, match="iou_floor"):
            gym.make("LaViDa/Grounding-v0", iou_floor=bad)
