"""Augmentation in the step: real and fake augmented in one call, differentiably, the
penalties through it, ADA's strength adapted by the step, logged and kept in checkpoints."""

import json

import pytest
import torch
from helpers import Stepping
from safetensors.torch import load_file

import digitgan
from digitgan.augment import augment
from digitgan.errors import CheckpointError
from digitgan.store.checkpoint import read_checkpoint, save_checkpoint


def test_one_call_augments_real_and_fake_with_one_policy_differentiably(tiny, small_data):
    """The step augments the real and the fake batch as one batch: per-image parameters drawn
    from the run's noise stream in one call, and G's images get D's gradient through it."""
    cfg = tiny("dcgan", augment__mode="diffaugment", augment__policy=["translation", "cutout"])
    s = Stepping(cfg, small_data)
    real, _ = s.batches.next()
    fake = s.G(s.noise(len(real))).detach().requires_grad_(True)
    state = s.noise_gen.get_state()
    seen_real, seen_fake = s.kernel.augmented(real, fake)
    replay = torch.Generator().set_state(state)
    both = augment(torch.cat([real, fake]), ["translation", "cutout"], 1.0, replay)
    assert torch.equal(torch.cat([seen_real, seen_fake]), both)
    assert not torch.equal(seen_real, real) and not torch.equal(seen_fake, fake)
    seen_fake.sum().backward()
    # each fake pixel's gradient: 1 where it shows, 0 where it was cut out or moved out
    assert set(fake.grad.unique().tolist()) == {0.0, 1.0}
    assert (fake.grad.flatten(1).sum(1) > 0).all()


@pytest.mark.parametrize(
    "name, overrides, calls",
    [
        ("hinge-sn", {"loss__r1__gamma": 1.0}, 4),  # real, fake, R1's real, G's fake
        ("seed", {"loss__objective": "rpgan", "loss__r2__gamma": 1.0}, 4),  # real + fake as
        # one batch, R2's fake, G's fake, the real batch paired with it
    ],
)
def test_every_image_d_scores_is_augmented(tiny, small_data, name, overrides, calls):
    """With cutout at strength 1, every image D sees has a square of at least 7 x 7 pixels
    at the fill, the middle of the images' range (0 in [-1, 1], 0.5 in [0, 1]: a value
    neither the generator's output nor the real digits take exactly)."""
    cfg = tiny(name, augment__mode="diffaugment", augment__policy=["cutout"], **overrides)
    s = Stepping(cfg, small_data)
    fill = sum(s.G.out_range) / 2
    seen = []
    s.D.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    s.step()
    assert len(seen) == calls
    assert all(((x == fill).flatten(1).sum(1) >= 49).all() for x in seen)


def test_the_penalties_see_d_through_the_augmentation(tiny, small_data):
    s = Stepping(tiny("seed", augment__mode="diffaugment", augment__policy=["cutout"]), small_data)
    x, _ = s.batches.next()
    x = x.clone().requires_grad_(True)
    s.kernel.penalty_d()(x, None).sum().backward()
    # the pixels cut out of an image (a square of 14 x 14, or what of it is inside) do not
    # reach D: their input gradient is exactly zero
    zero = (x.grad[:, 0] == 0).flatten(1).sum(1)
    assert (zero >= 7 * 7).all()
    plain = Stepping(tiny("seed"), small_data)
    assert plain.kernel.penalty_d() is plain.D_train


def test_the_step_adapts_p_to_the_real_logits_by_the_documented_amount(tiny, small_data):
    """interval 1, batch 8, ramp 80 images: p moves by 8 / 80 = 0.1 per iteration, up while
    E[sign D(x)] is above the target, down while below."""
    cfg = tiny(
        "seed",
        augment__mode="ada",
        augment__ada__interval=1,
        augment__ada__ramp_images=80,
        augment__ada__target=0.6,
        augment__ada__start=0.5,
        train__iters=20,
    )
    s = Stepping(cfg, small_data)
    p = 0.5
    moves = set()
    for _ in range(12):
        s.step()
        rt = s.result.real_logits.sign().mean().item()
        move = 0.0 if rt == 0.6 else (0.1 if rt > 0.6 else -0.1)
        moves.add(move)
        p = min(1.0, max(0.0, p + move))
        stats = s.stats()
        assert stats["augment_rt"] == pytest.approx(rt)
        assert stats["augment_p"] == pytest.approx(p, abs=1e-5)
    assert moves >= {0.1}  # a fresh D overfits 8 real digits at once: p rises


def _weights(run):
    return load_file(run / "checkpoints" / "latest.safetensors")


def test_ada_state_is_saved_and_a_resumed_run_is_bit_identical(tmp_path, tiny, small_data):
    """Stopped at 5 with interval 4, the resumed run carries p and the signs gathered since
    the last adjustment."""
    cfg = tiny(
        "dcgan",
        augment__mode="ada",
        augment__ada__interval=4,
        augment__ada__ramp_images=200,
        augment__ada__start=0.5,
        train__iters=9,
    )
    digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    digitgan.train(cfg.replace(train__iters=5), tmp_path / "b", dataset=small_data, progress=False)
    part = _weights(tmp_path / "b")
    # adjusted once, by 4 x 8 / 200 = 0.16, and the signs of iteration 5's 8 real images kept
    assert float(part["augment.p"]) in (pytest.approx(0.34), pytest.approx(0.66))
    assert float(part["augment.signs"][1]) == 8
    digitgan.resume(tmp_path / "b", iters=9, dataset=small_data, progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logged = [
        json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    assert "augment_p" in logged[-1] and "augment_rt" in logged[-1]


def test_unusable_augmentation_state_in_a_checkpoint_is_refused(tmp_path, tiny, small_data):
    cfg = tiny("seed", augment__mode="ada", train__iters=2)
    digitgan.train(cfg, tmp_path / "r", dataset=small_data, progress=False)
    path = tmp_path / "r" / "checkpoints" / "latest.safetensors"
    tensors, meta = read_checkpoint(path)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version")}
    save_checkpoint(path, tensors | {"augment.p": torch.tensor(2.0)}, meta)
    with pytest.raises(CheckpointError, match="augmentation state unusable: augment.p is 2.0"):
        digitgan.resume(tmp_path / "r", iters=4, dataset=small_data, progress=False)
