"""Scene graph: sampling, non-overlap, exact palette rendering and tight boxes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lavida_envs.render import ALL_COLORS, BACKGROUND, PALETTE
from lavida_envs.scene import (
    GAP,
    KINDS,
    Scene,
    Shape,
    can_place,
    num_sides,
    place_shape,
    render_scene,
    sample_grid_scene,
    sample_scene,
    scene_mask,
    shape_box,
    shape_mask,
)


def test_same_rng_seed_same_scene_and_pixels():
    a = sample_scene(random.Random(7))
    b = sample_scene(random.Random(7))
    assert a == b and hash(a) == hash(b) and a.key() == b.key()
    assert render_scene(a, 96).tobytes() == render_scene(b, 96).tobytes()


def test_key_ignores_shape_order():
    s = sample_scene(random.Random(3), n_min=4, n_max=4)
    rev = Scene(tuple(reversed(s.shapes)))
    assert rev.key() == s.key()
    assert render_scene(rev, 64).tobytes() == render_scene(s, 64).tobytes()


@pytest.mark.parametrize("seed", range(40))
def test_sampled_scene_has_separated_shapes_inside_the_image(seed):
    s = sample_scene(random.Random(seed))
    assert 3 <= len(s) <= 9
    for i, a in enumerate(s):
        assert can_place([b for j, b in enumerate(s) if j != i], a, gap=GAP * 0.999)


@pytest.mark.parametrize("size", [64, 100, 128])
def test_render_uses_palette_colours_only_and_every_shape_is_visible(size):
    for seed in range(10):
        s = sample_scene(random.Random(seed))
        img = render_scene(s, size)
        assert img.dtype == np.uint8 and img.shape == (size, size, 3)
        colours = {tuple(c) for c in img.reshape(-1, 3)}
        assert colours <= set(ALL_COLORS)
        masks = [shape_mask(sh, size) for sh in s]
        # masks are disjoint, and each shape's pixels carry its colour
        assert int(sum(m.sum() for m in masks)) == int(np.logical_or.reduce(masks).sum())
        for sh, m in zip(s, masks):
            assert m.sum() >= 12, f"{sh} is nearly invisible at {size}px"
            assert (img[m] == PALETTE[sh.color]).all()
        assert (img[~scene_mask(s, size)] == BACKGROUND).all()


def test_shape_box_is_the_tight_box_of_the_drawn_pixels():
    for seed in range(20):
        s = sample_scene(random.Random(seed))
        for sh in s:
            m = shape_mask(sh, 80)
            ys, xs = np.nonzero(m)
            assert shape_box(sh, 80) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_hand_placed_square_box_and_colour():
    sq = Shape("square", "red", 0.25, 0.5, 0.5)
    x1, y1, x2, y2 = shape_box(sq, 100)
    # half-side 0.82 * 25 px = 20.5 px around the centre 50
    assert (x1, y1) == (29, 29) and (x2, y2) == (71, 71)
    img = render_scene(Scene((sq,)), 100)
    assert tuple(img[50, 50]) == PALETTE["red"] and tuple(img[5, 5]) == BACKGROUND
    assert tuple(img[y1, x1]) == PALETTE["red"] and tuple(img[y2, x2]) == BACKGROUND


def test_num_sides_and_invalid_shapes():
    assert [num_sides(k) for k in ("circle", "triangle", "square", "pentagon", "star")] == [0, 3, 4, 5, 10]
    assert set(KINDS) >= {"circle", "square", "triangle", "pentagon", "star"}
    with pytest.raises(ValueError, match="kind"):
        num_sides("blob")
    with pytest.raises(ValueError, match="color"):
        Shape("circle", "magenta", 0.1, 0.5, 0.5)
    with pytest.raises(ValueError, match="size"):
        Shape("circle", "red", 0.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="centre"):
        Shape("circle", "red", 0.1, 1.5, 0.5)


def test_place_shape_respects_existing_shapes_and_scene_edits():
    rng = random.Random(0)
    s = sample_scene(rng, n_min=3, n_max=3)
    new = place_shape(rng, s.shapes, "star", "blue", 0.06)
    assert new is not None and can_place(s.shapes, new)
    assert len(s.with_shape(new)) == 4 and len(s.without(0)) == 2
    assert s.replace(0, new)[0] == new
    # a shape filling the image cannot be placed next to anything
    assert place_shape(rng, s.shapes, "circle", "red", 0.45) is None


def test_grid_scene_puts_one_size_at_distinct_cell_centres():
    rng = random.Random(3)
    for _ in range(50):
        scene = sample_grid_scene(rng, 3, 9, grid=4, size=0.085)
        cells = {(round(s.x * 4 - 0.5), round(s.y * 4 - 0.5)) for s in scene}
        assert 3 <= len(scene) <= 9 and len(cells) == len(scene)
        assert all(s.size == 0.085 and (s.x * 4 - 0.5) % 1 == 0 and (s.y * 4 - 0.5) % 1 == 0 for s in scene)
    with pytest.raises(ValueError, match="does not fit a 4x4 grid"):
        sample_grid_scene(random.Random(0), 16, 16, grid=4, size=0.12)
    with pytest.raises(ValueError, match="n_max <= 16 cells"):
        sample_grid_scene(random.Random(0), 3, 17, grid=4, size=0.085)
