"""The augmentation transforms on hand-computed images, their random parameters, the policy
at a strength, their gradients, and the ADA strength on constructed overfitting signals."""

import math

import pytest
import torch

from digitgan.augment import (
    ADAOptions,
    AdaptiveStrength,
    affine,
    augment,
    brightness,
    color,
    contrast,
    cutout,
    erase,
    saturation,
    shift,
    translation,
    warp,
)

F = -9.0  # a fill value no test image holds


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shift_moves_each_image_by_its_own_whole_pixels_and_fills_the_rest():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    out = shift(x, torch.tensor([1, 0, -2]), torch.tensor([-1, 0, 2]), fill=F)
    down_left = [[F, F, F, F], [2, 3, 4, F], [6, 7, 8, F], [10, 11, 12, F]]
    up_right = [[F, F, 9, 10], [F, F, 13, 14], [F, F, F, F], [F, F, F, F]]
    assert out[0, 0].tolist() == down_left
    assert torch.equal(out[1], x[1])
    assert out[2, 0].tolist() == up_right


def test_erase_sets_what_of_the_rectangle_lies_in_the_image():
    x = torch.ones(2, 2, 4, 4)
    out = erase(x, torch.tensor([-1, 1]), torch.tensor([2, 1]), (2, 2), fill=F)
    first = [[1, 1, F, F], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    second = [[1, 1, 1, 1], [1, F, F, 1], [1, F, F, 1], [1, 1, 1, 1]]
    assert out[0, 0].tolist() == out[0, 1].tolist() == first  # every channel
    assert out[1, 0].tolist() == out[1, 1].tolist() == second


# one image of 3 channels and 2 pixels: channel means per pixel 0.3 and 0.1, image mean 0.2
RGB = torch.tensor([[0.0, 0.6], [0.3, -0.3], [0.6, 0.0]]).view(1, 3, 1, 2)


@pytest.mark.parametrize(
    "fn, factor, expected",
    [
        (brightness, 0.25, [[0.25, 0.85], [0.55, -0.05], [0.85, 0.25]]),
        (saturation, 0.0, [[0.3, 0.1], [0.3, 0.1], [0.3, 0.1]]),
        (saturation, 2.0, [[-0.3, 1.1], [0.3, -0.7], [0.9, -0.1]]),
        (contrast, 0.5, [[0.1, 0.4], [0.25, -0.05], [0.4, 0.1]]),
    ],
)
def test_colour_transforms_on_a_hand_computed_image(fn, factor, expected):
    out = fn(RGB, torch.tensor([factor]))
    assert torch.allclose(out.view(3, 2), torch.tensor(expected), atol=1e-6)


def test_colour_leaves_one_channel_images_alone_and_draws_nothing():
    x, g = torch.rand(4, 1, 6, 6), gen()
    before = g.get_state()
    assert color(x, g) is x and torch.equal(g.get_state(), before)
    three = torch.rand(4, 3, 6, 6)
    assert not torch.equal(color(three, g), three)


def test_translation_shifts_by_up_to_an_eighth_every_shift_equally_likely():
    """28 / 8 = 3.5 rounds to 4: every shift in -4..4 on each axis, and none beyond."""
    n = 4000
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 14, 10] = 1.0
    out = translation(x, gen())
    assert ((out == 1).flatten(1).sum(1) == 1).all()  # one bright pixel each, moved whole
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 28 - 14, where % 28 - 10
    pairs = torch.stack([dy, dx], 1).unique(dim=0, return_counts=True)
    assert pairs[0].abs().max() == 4 and len(pairs[0]) == 81
    assert pairs[1].min() > n / 81 / 2  # each about n / 81 times


def test_translation_fills_with_the_middle_of_the_range():
    x = torch.ones(200, 1, 8, 8)
    lows = {float(v) for v in translation(x, gen(), (0.0, 1.0)).unique()}
    assert lows == {0.5, 1.0}
    assert {float(v) for v in translation(x, gen()).unique()} == {0.0, 1.0}


def test_cutout_erases_a_half_size_square_centred_anywhere():
    n = 3000
    out = cutout(torch.ones(n, 1, 28, 28), gen())
    erased = out[:, 0] == 0
    rows, cols = erased.any(2), erased.any(1)
    heights, widths = rows.sum(1), cols.sum(1)
    # a rectangle: its area is its height times its width, at most 14 x 14
    assert torch.equal(erased.flatten(1).sum(1), heights * widths)
    assert heights.max() == widths.max() == 14 and heights.min() == widths.min() == 7
    tops = rows.byte().argmax(1)
    assert set(tops.tolist()) == set(range(0, 22))  # top rows -7..21, clipped at 0


def test_warp_turns_anticlockwise_zooms_about_the_centre_and_fills():
    x = torch.rand(2, 3, 8, 8)
    none = warp(x, torch.zeros(2), torch.ones(2))
    assert torch.allclose(none, x, atol=1e-5)
    quarter = warp(x, torch.full((2,), math.pi / 2), torch.ones(2))
    assert torch.allclose(quarter, torch.rot90(x, 1, (2, 3)), atol=1e-5)
    # zoomed out to half size: the middle 4 x 4 holds the image, the border is the fill
    ones = torch.ones(1, 1, 8, 8)
    half = warp(ones, torch.zeros(1), torch.full((1,), 0.5), fill=F)[0, 0]
    assert torch.allclose(half[2:6, 2:6], torch.ones(4, 4))
    assert half[0].eq(F).all() and half[:, 0].eq(F).all()


def test_affine_turns_and_zooms_each_image_by_its_own_small_amount():
    x = torch.zeros(400, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0  # an upright bar on the fill of [-1, 1]
    out = affine(x, gen())
    assert torch.equal(out, affine(x, gen()))  # drawn from the generator
    assert not torch.allclose(out[0], out[1])

    def centre(rows):  # the ink's mean column in these rows
        ink = out[:, 0, rows].sum(1)
        return (ink * torch.arange(28.0)).sum(1) / ink.sum(1)

    assert (centre(slice(4, 24)) - 13.5).abs().max() < 0.5  # about the image's centre
    top = (centre(slice(5, 9)) - 13.5).abs()  # about 7 rows above it
    assert top.max() < 7 * 1.1 * math.tan(math.radians(15)) + 0.1  # turned 15 degrees at most
    assert top.max() > 1.5 and top.min() < 0.3  # both by close to the most and by little
    # the uncovered corners are the range's middle
    corners = affine(torch.ones(50, 1, 28, 28), gen(), (0.0, 1.0))[:, 0, 0, 0]
    assert corners.min() == pytest.approx(0.5, abs=1e-6) and corners.max() <= 1.0


def test_augment_is_the_identity_at_strength_zero():
    x = torch.rand(8, 3, 12, 12)
    policy = ["color", "translation", "cutout"]
    assert augment(x, policy, 0.0, gen()) is x
    assert torch.equal(augment(x, policy, torch.tensor(0.0), gen()), x)


def test_augment_at_strength_one_applies_the_policy_in_order():
    x = torch.rand(8, 3, 12, 12)
    g = gen(5)
    expected = cutout(translation(color(x, g), g), g)
    assert torch.equal(augment(x, ["color", "translation", "cutout"], 1.0, gen(5)), expected)


def test_each_transform_applies_to_each_image_with_probability_p():
    n = 2000
    x = torch.ones(n, 1, 16, 16)
    out = augment(x, ["cutout"], torch.tensor(0.3), gen())
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert changed == pytest.approx(0.3, abs=0.04)


@pytest.mark.parametrize(
    "p, policy",
    [
        (1.0, ["color", "translation", "cutout"]),
        (torch.tensor(0.5), ["color", "translation", "cutout"]),
        (1.0, ["affine"]),
    ],
)
def test_augment_is_differentiable_in_its_input(p, policy):
    """Autograd's gradient is the finite-difference one, with the random parameters held."""
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: augment(v, policy, p, gen(1)), (x,))


def ada(start=0.5, target=0.6, interval=2):
    """Adjustments of interval x (100 / interval) images / 1000 = 0.1."""
    opts = ADAOptions(target=target, interval=interval, ramp_images=1000, start=start)
    return AdaptiveStrength(opts, images_per_iteration=100 // interval, device="cpu")


def logits(positive: int, negative: int) -> torch.Tensor:
    return torch.cat([torch.full((positive,), 2.0), torch.full((negative,), -0.5)])


def test_ada_raises_p_when_d_is_too_sure_of_real_images():
    s = ada()
    s.observe(logits(9, 1))  # r_t = 0.8 > 0.6
    s.adapt(1, lambda t: t)
    assert float(s.p) == 0.5  # only every `interval` iterations
    s.observe(logits(18, 2))
    s.adapt(2, lambda t: t)
    assert float(s.rt) == pytest.approx(0.8) and float(s.p) == pytest.approx(0.6)
    assert s.scalars() == {"augment_p": s.p, "augment_rt": s.rt}


def test_ada_lowers_p_below_the_target_and_holds_it_at_the_target():
    s = ada(interval=1)
    s.observe(logits(5, 5))  # r_t = 0
    s.adapt(1, lambda t: t)
    assert float(s.p) == pytest.approx(0.4)
    s.observe(logits(8, 2))  # r_t = 0.6 exactly
    s.adapt(2, lambda t: t)
    assert float(s.p) == pytest.approx(0.4)


def test_ada_keeps_p_in_zero_one():
    high, low = ada(start=0.95, interval=1), ada(start=0.05, interval=1)
    for i in range(1, 4):
        high.observe(logits(10, 0))
        low.observe(logits(0, 10))
        high.adapt(i, lambda t: t)
        low.adapt(i, lambda t: t)
    assert float(high.p) == 1.0 and float(low.p) == 0.0


def test_ada_reads_r_t_through_the_mean_over_processes():
    s = ada(interval=1)
    s.observe(logits(10, 0))  # this process: r_t = 1; the others bring it to 0.2
    s.adapt(1, lambda t: t * 0.2)
    assert float(s.rt) == pytest.approx(0.2) and float(s.p) == pytest.approx(0.4)


def test_ada_state_round_trips_and_bad_state_is_refused():
    s = ada(interval=4)
    s.observe(logits(3, 1))
    saved = {k: v.clone() for k, v in s.state().items()}
    again = ada(start=0.0)
    again.load_state(saved)
    assert all(torch.equal(again.state()[k], saved[k]) for k in saved)
    again.load_state({})  # a checkpoint without augmentation state: nothing changes
    assert float(again.p) == 0.5
    for name, value, message in [
        ("p", torch.tensor(1.5), "outside"),
        ("p", torch.tensor(float("nan")), "NaN"),
        ("signs", torch.zeros(3), "shape"),
    ]:
        with pytest.raises(ValueError, match=message):
            again.load_state(saved | {name: value})
