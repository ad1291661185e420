"""Metrics for generated images, as plain functions of features or class probabilities.

Inputs. The distribution metrics (:func:`fid`, :func:`kid`, :func:`precision_recall`,
:func:`density_coverage`) take two sets of **features**, arrays or tensors of shape
(N, D). Images may be given instead, a batch (N, C, H, W) either float in [0, 1] or
uint8: they are first mapped through ``features``, a *feature function*: any callable
from a float image batch (N, C, H, W) in [0, 1] to a tensor (N, D). The default is the
bundled MNIST classifier's feature layer (:meth:`DigitClassifier.features`), never the
only choice. :func:`inception_score` and :func:`class_balance` take **class
probabilities** (N, K), or images and a ``classifier`` mapping them to probabilities
(default: the bundled MNIST classifier's :meth:`DigitClassifier.probs`).
:func:`memorisation` works on raw pixels by default (flattened images in [0, 1]).

Conventions: "real" is the reference set (the test split in ``digitgan evaluate``),
"fake" the generated one. FID is computed in float64; KID's kernel sums in float64 (its
kernel entries in float32); the nearest-neighbour metrics in float32 on the CPU, in chunks
(``chunk`` rows of the distance matrix at a time), so 10,000 x 10,000 sets need little
memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.stacked import stack_labels
from ..errors import ConfigError
from .classifier import as_float_images, default_classifier, fit_classifier

Array = np.ndarray | torch.Tensor
FeatureFn = Callable[[torch.Tensor], torch.Tensor]

CHUNK = 1024


@torch.no_grad()
def extract(fn: Callable, images: Array, batch_size: int = 500) -> torch.Tensor | tuple:
    """``fn`` applied to ``images`` (N, C, H, W; uint8 or float in [0, 1]) in batches, without
    gradients; the float32 CPU results concatenated (a tuple of them if ``fn`` returns one)."""
    outs = []
    for i in range(0, len(images), batch_size):
        out = fn(as_float_images(images[i : i + batch_size]))
        outs.append(tuple(out) if isinstance(out, tuple) else (out,))
    if not outs:
        raise ConfigError("no images to compute features of (an empty set)")
    cols = tuple(torch.cat([o[j].float().cpu() for o in outs]) for j in range(len(outs[0])))
    return cols if len(cols) > 1 else cols[0]


def _rows(x: Array, fn: Callable | None, default: Callable[[], Callable], what: str):
    """(N, D) values: ``x`` itself when 2-D, else images (N, C, H, W) mapped through ``fn``."""
    ndim = len(x.shape)
    if ndim == 2:
        return torch.as_tensor(x)
    if ndim == 4:
        return extract(fn or default(), x)
    raise ConfigError(
        f"expected {what} of shape (N, D) or images (N, C, H, W); got shape {tuple(x.shape)}"
    )


def features_of(x: Array, features: FeatureFn | None = None) -> torch.Tensor:
    """``x`` as features (N, D): as given if 2-D, else images mapped through ``features``
    (default: the bundled MNIST classifier's feature layer)."""
    return _rows(x, features, lambda: default_classifier().features, "features")


def probs_of(x: Array, classifier: FeatureFn | None = None) -> torch.Tensor:
    """``x`` as class probabilities (N, K): as given if 2-D, else images mapped through
    ``classifier`` (default: the bundled MNIST classifier's probabilities)."""
    p = _rows(x, classifier, lambda: default_classifier().probs, "class probabilities").double()
    if len(p) == 0 or (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p)).double()):
        raise ConfigError("class probabilities must be non-negative rows summing to 1")
    return p


# --- FID -------------------------------------------------------------------------------------


def gaussian_stats(features: Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D, unbiased) of features (N, D), in float64."""
    x = np.asarray(torch.as_tensor(features).double().cpu())
    if x.ndim != 2 or len(x) < 2:
        raise ConfigError(f"need at least 2 feature vectors (N, D), got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (via eigh)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray):
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2)`` (Dowson and Landau 1982; the FID
    of Heusel et al. 2017). The trace term is computed stably: with symmetric square roots
    R1, R2 (eigendecompositions, eigenvalues clipped at 0), ``tr((S1 S2)^1/2)`` is the sum of
    the singular values of ``R2 R1``. That stays real and accurate for singular or
    ill-conditioned covariances, where ``scipy.linalg.sqrtm(S1 @ S2)`` returns complex values
    and loses half the digits.
    """
    mu1, mu2, s1, s2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, sigma1, sigma2))
    diff = mu1 - mu2
    tr_sqrt = np.linalg.svd(_sqrt_psd(s2) @ _sqrt_psd(s1), compute_uv=False).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid(real: Array, fake: Array, features: FeatureFn | None = None) -> float:
    """Frechet Inception Distance (Heusel et al., NeurIPS 2017) between two sets, on the
    bundled classifier's features by default: the Frechet distance of Gaussians fitted to
    each set's features. 0 for identical statistics; lower is better."""
    return fid_from_stats(
        *gaussian_stats(features_of(real, features)), *gaussian_stats(features_of(fake, features))
    )


# --- KID -------------------------------------------------------------------------------------


def _poly_kernel_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(sum, trace) of the kernel matrix ``(a.b / D + 1)^3``: its entries in float32, their
    sums accumulated in float64."""
    k = (a.float() @ b.float().T).div_(a.shape[1]).add_(1).pow_(3)
    return float(k.sum(dtype=torch.float64)), float(k.diagonal().sum(dtype=torch.float64))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased estimate of squared MMD with the cubic kernel ``(x.y/D + 1)^3``: mean
    kernel over distinct pairs within x and within y, minus twice the mean across."""
    m, n = len(x), len(y)
    sxx, txx = _poly_kernel_sums(x, x)
    syy, tyy = _poly_kernel_sums(y, y)
    sxy, _ = _poly_kernel_sums(x, y)
    return (sxx - txx) / (m * (m - 1)) + (syy - tyy) / (n * (n - 1)) - 2 * sxy / (m * n)


def kid(
    real: Array,
    fake: Array,
    features: FeatureFn | None = None,
    subsets: int = 50,
    subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Kernel Inception Distance (Binkowski et al., "Demystifying MMD GANs", ICLR 2018).

    The unbiased estimate of squared MMD with the cubic polynomial kernel
    ``k(x, y) = (x.y / D + 1)^3`` on ``subsets`` random pairs of subsets of
    ``min(subset_size, len(real), len(fake))`` features each (drawn without replacement,
    seeded; 50 subsets of 1,000 as in the paper's code); returns ``{"mean": ..., "std":
    ...}`` over the subsets. Unbiased: its
    expectation is 0 when both sets come from one distribution (so it can be negative).
    """
    x, y = features_of(real, features), features_of(fake, features)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ConfigError(f"KID needs at least 2 samples in each set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(
            x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)]
        )
        for _ in range(subsets)
    ]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


# --- k-nearest-neighbour metrics -------------------------------------------------------------


def _float32(x: Array, features: FeatureFn | None) -> torch.Tensor:
    return features_of(x, features).float().contiguous()


def _radii(x: torch.Tensor, ks: tuple[int, ...], chunk: int) -> list[torch.Tensor]:
    """For each k in ``ks``, each row's distance to its k-th nearest other row of ``x``."""
    near = torch.cat(
        [
            torch.cdist(x[i : i + chunk], x).topk(max(ks) + 1, dim=1, largest=False).values
            for i in range(0, len(x), chunk)
        ]
    )
    return [near[:, k] for k in ks]


def nearest_distances(x: torch.Tensor, ref: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """For each row of ``x``, the distance to its nearest row of ``ref`` (N,)."""
    return torch.cat(
        [torch.cdist(x[i : i + chunk], ref).min(dim=1).values for i in range(0, len(x), chunk)]
    )


def prdc(
    real: Array,
    fake: Array,
    features: FeatureFn | None = None,
    k_pr: int = 3,
    k_dc: int = 5,
    chunk: int = CHUNK,
) -> dict[str, float]:
    """Precision, recall, density and coverage in one pass over each distance matrix.

    Balls: around each point, the closed ball reaching its k-th nearest neighbour within
    its own set. Then, with ``k_pr`` (Kynkaanniemi et al., "Improved Precision and Recall
    Metric for Assessing Generative Models", NeurIPS 2019):

    - ``precision``: the share of fake samples inside at least one real ball (fidelity);
    - ``recall``: the share of real samples inside at least one fake ball (diversity);

    and with ``k_dc``, real balls only (Naeem et al., "Reliable Fidelity and Diversity
    Metrics for Generative Models", ICML 2020):

    - ``density``: the number of real balls holding each fake sample, averaged, divided by
      ``k_dc`` (about 1 when both sets come from one distribution, more where fakes crowd
      dense real regions);
    - ``coverage``: the share of real balls holding at least one fake sample (mode
      dropping lowers it).

    Precision, recall and coverage lie in [0, 1]; higher is better for all four.
    """
    x, y = _float32(real, features), _float32(fake, features)
    for k, what in ((k_pr, "k_pr"), (k_dc, "k_dc")):
        if not 1 <= k < min(len(x), len(y)):
            raise ConfigError(
                f"{what} = {k} nearest neighbours needs more than {k} samples in each set, got "
                f"{len(x)} and {len(y)}"
            )
    (real_pr, real_dc), (fake_pr,) = _radii(x, (k_pr, k_dc), chunk), _radii(y, (k_pr,), chunk)
    in_real = torch.empty(len(y), dtype=torch.bool)
    in_fake = torch.zeros(len(x), dtype=torch.bool)
    covered = torch.zeros(len(x), dtype=torch.bool)
    balls = 0
    for i in range(0, len(y), chunk):
        d = torch.cdist(y[i : i + chunk], x)  # fakes in this chunk x all reals
        in_real[i : i + chunk] = (d <= real_pr).any(1)
        in_fake |= (d <= fake_pr[i : i + chunk, None]).any(0)
        inside = d <= real_dc
        balls += int(inside.sum())
        covered |= inside.any(0)
    return {
        "precision": float(in_real.double().mean()),
        "recall": float(in_fake.double().mean()),
        "density": balls / (k_dc * len(y)),
        "coverage": float(covered.double().mean()),
    }


def precision_recall(
    real: Array, fake: Array, features: FeatureFn | None = None, k: int = 3
) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019); see :func:`prdc`."""
    r = prdc(real, fake, features, k_pr=k, k_dc=k)
    return {"precision": r["precision"], "recall": r["recall"]}


def density_coverage(
    real: Array, fake: Array, features: FeatureFn | None = None, k: int = 5
) -> dict[str, float]:
    """Density and coverage (Naeem et al., ICML 2020); see :func:`prdc`."""
    r = prdc(real, fake, features, k_pr=k, k_dc=k)
    return {"density": r["density"], "coverage": r["coverage"]}


# --- classifier-based metrics ----------------------------------------------------------------


def inception_score(
    probs: Array, classifier: FeatureFn | None = None, splits: int = 10
) -> dict[str, float]:
    """The classifier Inception Score (Salimans et al., NeurIPS 2016), with the bundled
    classifier by default: ``exp(E_x KL(p(y|x) || p(y)))``, per each of ``splits`` equal
    parts of the set; ``{"mean": ..., "std": ...}`` over the parts. Between 1 and K (the
    number of classes); K means confident predictions spread evenly over all classes."""
    p = probs_of(probs, classifier)
    if not 1 <= splits <= len(p):
        raise ConfigError(f"splits = {splits}: need between 1 and {len(p)} (the sample count)")
    scores = []
    for part in torch.tensor_split(p, splits):
        marginal = part.mean(0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(1)
        scores.append(float(kl.mean().exp()))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores))}


def class_balance(
    probs: Array, classifier: FeatureFn | None = None, min_share: float = 0.1
) -> dict:
    """How the classifier labels the samples: ``histogram`` (count per predicted class),
    ``kl_uniform`` (KL divergence, in nats, of the predicted-label frequencies from the
    uniform distribution: 0 when balanced, log K when one class only), ``classes_covered``
    (classes predicted for at least ``min_share`` of their fair share n/K of the samples),
    ``share_min`` and ``share_max`` (the smallest and largest share of the samples that one
    class gets: both 1/K when balanced) and ``mean_confidence`` (mean of the top class
    probability)."""
    p = probs_of(probs, classifier)
    n, k = p.shape
    counts = torch.bincount(p.argmax(1), minlength=k)
    freq = counts.double() / n
    return {
        "histogram": counts.tolist(),
        "kl_uniform": float(torch.special.xlogy(freq, freq * k).sum()),
        "classes_covered": int((counts >= min_share * n / k).sum()),
        "share_min": float(freq.min()),
        "share_max": float(freq.max()),
        "mean_confidence": float(p.max(1).values.mean()),
    }


def category_purity(probs: Array, categories: Array, k: int) -> float:
    """How well ``k`` categories learnt without labels (``model.categories``) match the
    classifier's classes: the share of samples whose predicted class is the one predicted most
    often in their category (the clustering purity of Manning et al. 2008, ch. 16.3); 1 when
    every category draws one class, about the largest class share when categories ignore
    class."""
    p = probs_of(probs)
    table = torch.zeros(k, p.shape[1], dtype=torch.long)
    pred = p.argmax(1)
    table.index_put_((torch.as_tensor(categories).long(), pred), torch.ones_like(pred), True)
    return float(table.max(1).values.sum()) / max(1, len(pred))


def label_accuracy(probs: Array, labels: Array, classifier: FeatureFn | None = None) -> dict:
    """How often the classifier names the class a conditional model was asked for.

    ``probs`` are class probabilities (N, K) (or images, see :func:`probs_of`), ``labels``
    the N requested classes. Returns ``accuracy``, the share of samples whose most probable
    class is their label, and ``per_class``: for each of the K classes, the accuracy of the
    samples requested as that class (None for a class never requested).
    """
    p = probs_of(probs, classifier)
    return predicted_accuracy(p.argmax(1), labels, p.shape[1])


def predicted_accuracy(predicted: Array, labels: Array, num_classes: int) -> dict:
    """:func:`label_accuracy` from the predicted classes (N,) of ``num_classes`` classes."""
    predicted = torch.as_tensor(np.asarray(predicted)).flatten()
    y = torch.as_tensor(np.asarray(labels)).flatten()
    k = num_classes
    if y.is_floating_point() or y.dtype == torch.bool or len(y) != len(predicted):
        raise ConfigError(
            f"labels: expected {len(predicted)} integer class labels (one per sample), got "
            f"{len(y)} of type {y.dtype}"
        )
    y = y.long()
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ConfigError(
            f"labels: values must lie in 0..{k - 1}, found {int(y.min())}..{int(y.max())}"
        )
    hit = (predicted == y).double()
    asked = torch.bincount(y, minlength=k)
    right = torch.bincount(y, weights=hit, minlength=k)
    per_class = [float(r / a) if a else None for r, a in zip(right, asked, strict=True)]
    return {"accuracy": float(hit.mean()), "per_class": per_class}


def classification_accuracy_score(
    images: Array,
    labels: Array,
    test_images: Array,
    test_labels: Array,
    class_names: tuple[str, ...],
    *,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    **recipe,
) -> dict:
    """The classification accuracy score, CAS (Ravuri and Vinyals, "Classification Accuracy
    Score for Conditional Generative Models", NeurIPS 2019; "GAN-train" in Shmelkov et al.,
    "How good is my GAN?", ECCV 2018): a classifier trained on labelled ``images`` alone
    (N, C, H, W; uint8 or float in [0, 1]; the samples of a conditional model and the classes
    they were drawn as), scored on real ``test_images`` and ``test_labels``.

    The classifier is a new :class:`~digitgan.eval.classifier.DigitClassifier` for
    ``class_names``, trained by :func:`~digitgan.eval.classifier.fit_classifier` (the shipped
    classifiers' recipe; ``recipe`` passes its ``epochs``, ``batch_size`` and ``lr``) from
    ``seed``, with ``log`` given each epoch's line. Returns ``accuracy``, its accuracy on the
    test images, and ``per_class``, that accuracy on the test images of each class (the form
    of :func:`label_accuracy`). Trained on real training images the same way, it gives the
    score that generated ones are measured against; a generator that draws the wrong class,
    or only the easy digits of a class, scores lower.
    """
    model, _ = fit_classifier(
        images, labels, class_names, seed=seed, log=log or (lambda line: None), **recipe
    )
    return label_accuracy(extract(model.for_inference().probs, test_images), test_labels)


def mode_balance(digits: Array, num_classes: int) -> dict:
    """How samples of a stacked dataset spread over its modes (Metz et al. 2017; Srivastava
    et al. 2017; Lin et al. 2018).

    ``digits`` (N, C) is the class predicted for each of a sample's C channels, in
    0..``num_classes``-1; a sample's mode is those classes read as a base-K number (K =
    ``num_classes``), so there are K^C modes. Returns ``histogram`` (samples per mode),
    ``modes_covered`` (modes holding at least one sample, of K^C) and ``modes_kl``, the
    reverse KL divergence KL(q || uniform) in nats of the samples' mode frequencies q from
    the uniform distribution over the K^C modes: 0 when exactly uniform, C log K when every
    sample falls in one mode.
    """
    d = torch.as_tensor(np.asarray(digits)).long()
    if d.ndim != 2 or len(d) == 0 or d.min() < 0 or d.max() >= num_classes:
        raise ConfigError(
            f"digits: expected classes in 0..{num_classes - 1} of shape (N, C) with N > 0, "
            f"got shape {tuple(d.shape)}"
        )
    total = num_classes ** d.shape[1]
    counts = torch.bincount(torch.as_tensor(stack_labels(d, num_classes)), minlength=total)
    freq = counts.double() / len(d)
    return {
        "histogram": counts.tolist(),
        "modes_covered": int((counts > 0).sum()),
        "modes_kl": float(torch.special.xlogy(freq, freq * total).sum()),
    }


# --- memorisation ----------------------------------------------------------------------------


def memorisation(
    samples: Array,
    train: Array,
    test: Array,
    features: FeatureFn | None = None,
    quantile: float = 0.01,
) -> dict[str, float]:
    """The share of samples closer to the training set than nearly all test images are.

    Exactly: for each test image, its distance to the nearest training image; ``threshold``
    is the ``quantile`` (default 1%) of those distances. ``share`` is the fraction of
    samples whose nearest training image lies within ``threshold``. Test images are fresh
    draws from the data distribution, so a generator that does not copy its training data
    scores about ``quantile`` or less (blurry or odd samples sit farther from everything);
    copies of training images score near 1. Euclidean distance on raw pixels (images
    flattened, in [0, 1]) unless a feature function is given; features (N, D) are used as
    given.
    """

    def rows(x: Array) -> torch.Tensor:
        if features is None and len(x.shape) == 4:
            return as_float_images(x).flatten(1)
        return _float32(x, features)

    if not 0 < quantile < 1:
        raise ConfigError(f"quantile {quantile}: must lie strictly between 0 and 1")
    reference = rows(train)
    threshold = float(torch.quantile(nearest_distances(rows(test), reference).double(), quantile))
    nearest = nearest_distances(rows(samples), reference)
    return {
        "share": float((nearest <= threshold).double().mean()),
        "threshold": threshold,
        "quantile": quantile,
    }
