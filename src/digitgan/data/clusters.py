"""Balanced k-means: K clusters of equal size, found without labels.

``model.clusters`` gives an unconditional model categories that are clusters of the training
images (see :mod:`digitgan.models.base`); the clusters come from here. Lloyd's k-means
(k-means++ seeding: Arthur and Vassilvitskii 2007) whose assignment step is balanced: each
point goes to the cluster its entropic optimal transport plan to the centroids, with every
cluster taking an equal share of the points, gives it the most mass (Sinkhorn-Knopp in the
log domain: Cuturi 2013; the equal-share constraint as in Asano et al. 2020, "Self-labelling
via simultaneous clustering and representation learning"). Equal shares let the generator
draw its categories uniformly; the sizes come out equal to within a few percent.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from digitgan.errors import ConfigError

SINKHORN_ITERS = 50
TEMPERATURE = 0.02
"""The entropic plan's temperature, as a fraction of the mean squared distance."""


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` initial centroids (k, d) from the rows of ``x`` (n, d): the first uniformly,
    each next one with probability proportional to its squared distance to the nearest
    centroid so far."""
    first = torch.randint(len(x), (1,), generator=generator)
    centroids = [x[first]]
    nearest = (x - centroids[0]).pow(2).sum(1)
    for _ in range(k - 1):
        if not bool(nearest.gt(0).any()):  # every point already is a centroid
            pick = torch.randint(len(x), (1,), generator=generator)
        else:
            pick = torch.multinomial(nearest, 1, generator=generator)
        centroids.append(x[pick])
        nearest = torch.minimum(nearest, (x - x[pick]).pow(2).sum(1))
    return torch.cat(centroids)


def balanced_assignment(cost: Tensor) -> Tensor:
    """Each row's cluster (n,) for a cost matrix (n, k) of squared distances: the argmax of
    the row's entropic transport plan in which every row carries 1/n and every cluster
    receives 1/k."""
    n, k = cost.shape
    logits = -cost / (TEMPERATURE * cost.mean().clamp_min(1e-12))
    u, v = torch.zeros(n, dtype=cost.dtype), torch.zeros(k, dtype=cost.dtype)
    for _ in range(SINKHORN_ITERS):
        u = -torch.logsumexp(logits + v, 1) - math.log(n)
        v = -torch.logsumexp(logits + u[:, None], 0) - math.log(k)
    return (logits + v).argmax(1)


def balanced_kmeans(
    x: Tensor, k: int, generator: torch.Generator, iters: int = 30
) -> tuple[Tensor, Tensor]:
    """(assignments (n,), centroids (k, d)) of the rows of ``x`` (n, d) in ``k`` clusters of
    (nearly) equal size: at most ``iters`` balanced Lloyd iterations, stopping early when no
    assignment changes. Randomness comes only from ``generator``. A cluster left empty keeps
    its centroid."""
    x = x.float()
    if not 1 <= k <= len(x):
        raise ValueError(f"cannot make {k} clusters of {len(x)} points")
    centroids = kmeans_plus_plus(x, k, generator)
    assigned = None
    for _ in range(iters):
        new = balanced_assignment(torch.cdist(x, centroids).pow(2))
        if assigned is not None and torch.equal(new, assigned):
            break
        assigned = new
        sums = torch.zeros_like(centroids).index_add_(0, assigned, x)
        counts = torch.bincount(assigned, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return assigned, centroids


def image_clusters(images: np.ndarray, k: int, generator: torch.Generator) -> Tensor:
    """The cluster (0..k-1) of each image of ``images`` (N, C, H, W; uint8): balanced k-means
    of their pixels scaled to [0, 1], computed on the CPU."""
    if k > len(images):
        raise ConfigError(
            f"model.categories: {k} clusters need at least {k} training images; the dataset "
            f"has {len(images)}"
        )
    pixels = torch.from_numpy(images).flatten(1).float().div_(255.0)
    return balanced_kmeans(pixels, k, generator)[0]
