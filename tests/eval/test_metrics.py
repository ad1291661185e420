"""The metrics on inputs whose answers are known: closed forms, toy sets, constructed labels."""

import math

import numpy as np
import pytest
import torch

from digitgan.errors import ConfigError
from digitgan.eval.metrics import (
    category_purity,
    class_balance,
    density_coverage,
    fid,
    fid_from_stats,
    gaussian_stats,
    inception_score,
    kid,
    label_accuracy,
    memorisation,
    mode_balance,
    precision_recall,
)


def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))  # correlated features
    assert abs(fid(x, x)) < 1e-8
    # fewer samples than dimensions: a singular covariance, still real, finite and ~0
    few = rng.normal(size=(20, 64))
    assert abs(fid(few, few)) < 1e-8
    # a shifted copy: exactly the squared shift (covariances equal)
    assert fid(x, x + 0.5) == pytest.approx(16 * 0.25, rel=1e-9)


def test_fid_of_two_gaussians_matches_the_closed_form():
    # non-commuting 2x2 covariances: tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = np.array([[1.0, -0.4], [-0.4, 0.5]])
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    closed = 5.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-12)
    # and from samples of those Gaussians
    rng = np.random.default_rng(1)
    a = rng.multivariate_normal(mu1, s1, size=200_000)
    b = rng.multivariate_normal(mu2, s2, size=200_000)
    assert fid(a, b) == pytest.approx(closed, rel=0.01)
    mu, sigma = gaussian_stats(a)
    assert np.allclose(mu, mu1, atol=0.01) and np.allclose(sigma, s1, atol=0.02)


def _uniform_moments(lo: float, hi: float) -> list[float]:
    return [(hi ** (j + 1) - lo ** (j + 1)) / ((j + 1) * (hi - lo)) for j in (1, 2, 3)]


def test_kid_is_unbiased_on_a_known_case():
    # In 1-D the cubic kernel is (xy + 1)^3 = x^3 y^3 + 3 x^2 y^2 + 3 x y + 1, so the squared
    # MMD of two distributions is (m3 - m3')^2 + 3 (m2 - m2')^2 + 3 (m1 - m1')^2 (raw moments).
    mx, my = _uniform_moments(0, 1), _uniform_moments(0.25, 1.25)
    truth = (mx[2] - my[2]) ** 2 + 3 * (mx[1] - my[1]) ** 2 + 3 * (mx[0] - my[0]) ** 2
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (20_000, 1)), rng.uniform(0.25, 1.25, (20_000, 1))
    # subsets of 4: the biased (V-statistic) estimate would be ~1.0 here, far from ~0.61
    subsets = 2000
    r = kid(x, y, subsets=subsets, subset_size=4)
    se = r["std"] / math.sqrt(subsets)
    assert abs(r["mean"] - truth) < 4 * se < 0.15
    same = kid(x, rng.uniform(0, 1, (20_000, 1)), subsets=subsets, subset_size=4)
    assert abs(same["mean"]) < 4 * same["std"] / math.sqrt(subsets)
    # reproducible for its seed
    assert kid(x, y, subsets=5, subset_size=50) == kid(x, y, subsets=5, subset_size=50)


def test_precision_recall_density_coverage_on_toy_sets():
    rng = np.random.default_rng(0)
    # integer points: float32 computes their distances exactly, so ties are exact ties
    points = rng.integers(0, 1000, size=(400, 2))
    real = points.astype(np.float32)
    # identical sets: everything is inside; each real ball (radius: k-th neighbour) holds
    # its centre, its k nearest neighbours and any point tied with the k-th, so density is
    # (k + 1) / k plus the ties: counted here in exact integer arithmetic
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    inside = d2 <= np.sort(d2, axis=1)[:, 5:6]
    assert inside.sum() > 6 * 400  # the set has a tie or more
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    assert density_coverage(real, real, k=5) == {"density": inside.sum() / 2000, "coverage": 1.0}
    # half the fakes far away from the real data: precision halves, recall stays
    real = rng.normal(size=(400, 2))
    fake = np.concatenate([real, real + 100.0])
    pr = precision_recall(real, fake)
    assert pr == {"precision": 0.5, "recall": 1.0}
    dc = density_coverage(real, fake, k=5)
    assert dc["coverage"] == 1.0 and dc["density"] == pytest.approx(6 / 10, abs=0.01)
    # mode dropping: real data has two far clusters, the fakes cover one of them
    two = np.concatenate([real, real + 100.0])
    pr = precision_recall(two, real)
    assert pr == {"precision": 1.0, "recall": 0.5}
    assert density_coverage(two, real)["coverage"] == 0.5
    # fresh draws from the same distribution: high but not perfect, density near 1
    other = rng.normal(size=(400, 2))
    pr = precision_recall(real, other)
    assert 0.8 < pr["precision"] < 1.0 and 0.8 < pr["recall"] < 1.0
    assert 0.7 < density_coverage(real, other)["density"] < 1.3


def test_inception_score_and_class_balance_on_constructed_predictions():
    eye = np.eye(10)
    balanced = eye[np.arange(1000) % 10]  # confident and evenly spread: IS = K
    r = inception_score(balanced)
    assert r["mean"] == pytest.approx(10.0) and r["std"] == pytest.approx(0.0, abs=1e-9)
    assert inception_score(eye[np.zeros(100, int)], splits=1)["mean"] == pytest.approx(1.0)
    assert inception_score(np.full((100, 10), 0.1), splits=4)["mean"] == pytest.approx(1.0)

    cb = class_balance(balanced)
    assert cb["histogram"] == [100] * 10
    assert cb["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert cb["classes_covered"] == 10 and cb["mean_confidence"] == pytest.approx(1.0)
    # all one class: KL = log K, one class covered
    cb = class_balance(eye[np.full(50, 3)])
    assert cb["histogram"][3] == 50 and cb["kl_uniform"] == pytest.approx(math.log(10))
    assert cb["classes_covered"] == 1
    # 3 classes, 60/30/10 of 100, soft predictions of confidence 0.7
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    probs = np.full((100, 3), 0.15)
    probs[np.arange(100), labels] = 0.7
    cb = class_balance(probs, min_share=0.5)  # covered: at least 0.5 * 100/3 = 16.7 predictions
    freq = np.array([0.6, 0.3, 0.1])
    assert cb["histogram"] == [60, 30, 10] and cb["classes_covered"] == 2
    assert cb["kl_uniform"] == pytest.approx(float((freq * np.log(freq * 3)).sum()))
    assert cb["mean_confidence"] == pytest.approx(0.7)
    assert cb["share_min"] == pytest.approx(0.1) and cb["share_max"] == pytest.approx(0.6)


def test_label_accuracy_on_constructed_predictions():
    # 4 classes asked for 5 times each; the classifier says 3 for every sample asked as 3,
    # gets class 0 right 4 times out of 5, and class 1 never
    asked = np.repeat(np.arange(4), 5)
    said = asked.copy()
    said[0] = 2
    said[5:10] = 0
    probs = np.full((20, 4), 0.1)
    probs[np.arange(20), said] = 0.7
    r = label_accuracy(probs, asked)
    assert r["accuracy"] == pytest.approx(14 / 20)
    assert r["per_class"] == pytest.approx([0.8, 0.0, 1.0, 1.0])
    # a class never asked for has no accuracy; labels may be a tensor
    r = label_accuracy(probs[:10], torch.as_tensor(asked[:10]))
    assert r["per_class"][2:] == [None, None] and r["accuracy"] == pytest.approx(4 / 10)
    for bad, message in [
        (asked[:5], "expected 20 integer class labels"),
        (asked.astype(float), "expected 20 integer class labels"),
        (asked + 1, r"values must lie in 0..3, found 1..4"),
    ]:
        with pytest.raises(ConfigError, match=message):
            label_accuracy(probs, bad)


def test_memorisation_counts_copies_of_training_images():
    rng = np.random.default_rng(0)
    train, test = rng.random((2000, 1, 4, 4)), rng.random((1000, 1, 4, 4))
    copies = memorisation(train[:300], train, test)
    assert copies["share"] == 1.0 and copies["quantile"] == 0.01 and copies["threshold"] > 0
    fresh = memorisation(rng.random((1000, 1, 4, 4)), train, test)
    assert fresh["share"] < 0.04  # about 1% by construction
    half = np.concatenate([train[:500], rng.random((500, 1, 4, 4))])
    assert 0.5 <= memorisation(half, train, test)["share"] < 0.53


def test_metrics_take_images_and_any_feature_function():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((300, 1, 8, 8))).float()
    b = a.flip(3)  # mirrored images: different pixels, same per-row means

    def row_means(x):
        return x.mean(dim=3).flatten(1)  # (N, 8): mirror-invariant features

    assert abs(fid(a, b, features=row_means)) < 1e-8
    assert fid(a, b, features=lambda x: x.flatten(1)) > 0.1
    assert precision_recall(a, b, features=row_means) == {"precision": 1.0, "recall": 1.0}
    # uint8 images are scaled to [0, 1] before the feature function sees them
    seen = []
    fid((a * 255).to(torch.uint8), a, features=lambda x: seen.append(x.max()) or x.flatten(1))
    assert all(m <= 1.0 for m in seen)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fid(np.zeros((5, 2, 3)), np.zeros((5, 2))), "expected features of shape"),
        (lambda: fid(np.zeros((1, 3)), np.zeros((5, 3))), "at least 2 feature vectors"),
        (lambda: precision_recall(np.zeros((3, 2)), np.zeros((9, 2))), "needs more than 3 samples"),
        (lambda: inception_score(np.full((4, 2), 0.7)), "summing to 1"),
        (lambda: inception_score(np.eye(3), splits=5), "splits = 5"),
        (lambda: kid(np.zeros((1, 2)), np.zeros((9, 2))), "at least 2 samples"),
    ],
)
def test_bad_inputs_are_clear_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_mode_balance_counts_modes_and_the_reverse_kl_on_constructed_digits():
    one_mode = mode_balance(np.tile([7, 0, 3], (500, 1)), 10)
    assert one_mode["modes_covered"] == 1 and one_mode["histogram"][703] == 500
    assert one_mode["modes_kl"] == pytest.approx(math.log(1000))  # C log K
    every_mode = np.array([[a, b, c] for a in range(10) for b in range(10) for c in range(10)])
    uniform = mode_balance(np.concatenate([every_mode, every_mode]), 10)
    assert uniform["modes_covered"] == 1000 and uniform["modes_kl"] == pytest.approx(0, abs=1e-12)
    half = mode_balance(every_mode[:500], 10)  # 500 modes, equally often: KL = log 2
    assert half["modes_covered"] == 500 and half["modes_kl"] == pytest.approx(math.log(2))
    with pytest.raises(ConfigError, match="classes in 0..9 of shape"):
        mode_balance(np.array([[10, 0, 0]]), 10)


def test_category_purity_counts_the_samples_of_each_categorys_commonest_class():
    probs = torch.eye(3)[[0, 0, 1, 2, 2, 2, 1, 1]]  # predicted classes
    categories = [0, 0, 0, 1, 1, 1, 1, 1]  # category 0: classes 0, 0, 1; 1: 2, 2, 2, 1, 1
    assert category_purity(probs, categories, 2) == pytest.approx((2 + 3) / 8)
    assert category_purity(probs, [0, 0, 1, 2, 2, 2, 1, 1], 3) == 1.0  # one class each
    assert category_purity(probs, [0] * 8, 1) == pytest.approx(3 / 8)  # the largest share
