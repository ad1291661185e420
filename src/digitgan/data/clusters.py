"""Balanced spectral clustering: K clusters of equal size, found without labels.

``model.clusters`` gives an unconditional model categories that are clusters of the training
images (see :mod:`digitgan.models.base`); the clusters come from here (:func:`image_clusters`):

1. the images are deskewed (:func:`deskew`), so that slant and position no longer count;
2. they are embedded by the spectrum of their nearest-neighbour graph
   (:func:`spectral_embedding`: Ng, Jordan and Weiss 2002, "On spectral clustering", with the
   self-tuning affinities of Zelnik-Manor and Perona 2004), in which images joined by chains
   of close neighbours lie close even where their pixels differ;
3. the embedded points are split by balanced k-means (:func:`balanced_kmeans`): Lloyd's
   k-means (k-means++ seeding: Arthur and Vassilvitskii 2007) whose assignment step gives each
   point the cluster that its entropic optimal transport plan to the centroids, with every
   cluster taking an equal share of the points, gives it the most mass (Sinkhorn-Knopp in the
   log domain: Cuturi 2013; the equal-share constraint as in Asano et al. 2020,
   "Self-labelling via simultaneous clustering and representation learning"), rounded to
   clusters whose sizes differ by one at most. Equal sizes let the generator draw its
   categories uniformly.

Images whose channels each hold a picture of their own (Stacked MNIST) are clustered channel
by channel instead (:func:`channel_clusters`, for ``model.code_parts``).

On mnist20k, 100 clusters: 94% of the images fall in a cluster of their digit's majority,
against 92% for k-means of the deskewed pixels and 85% of the raw ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from digitgan.data.stacked import stack_labels
from digitgan.errors import ConfigError

SINKHORN_ITERS = 100
"""Sinkhorn-Knopp iterations per assignment."""
TEMPERATURE = 0.02
"""The entropic plan's temperature, as a fraction of the mean squared distance."""
NEIGHBOURS = 10
"""Each point's neighbours in the graph of :func:`spectral_embedding`."""
EMBEDDING_DIMS = 40
"""The most eigenvectors :func:`image_clusters` embeds in (on mnist20k, 100 clusters: 20, 40
and 80 of them put 94.0%, 94.2% and 94.3% of the images in a cluster of their digit's
majority; more take longer to find)."""
SUBSPACE_ITERS = 300
"""Orthogonal iterations that find them."""


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
    """Each row's cluster (n,) for a cost matrix (n, k) of squared distances, every cluster
    taking n // k or n // k + 1 rows: the rows' entropic transport plan in which every row
    carries 1/n and every cluster receives 1/k, rounded by :func:`fill`."""
    n, k = cost.shape
    logits = -cost / (TEMPERATURE * cost.mean().clamp_min(1e-12))
    u, v = torch.zeros(n, dtype=cost.dtype), torch.zeros(k, dtype=cost.dtype)
    for _ in range(SINKHORN_ITERS):
        u = -torch.logsumexp(logits + v, 1) - math.log(n)
        v = -torch.logsumexp(logits + u[:, None], 0) - math.log(k)
    capacity = torch.full((k,), n // k)
    capacity[: n % k] += 1
    return fill(logits + v, capacity)


def fill(scores: Tensor, capacity: Tensor) -> Tensor:
    """Each row's column (n,) for ``scores`` (n, k), column j taking at most ``capacity[j]``
    rows (capacities summing to n or more): in rounds, every row not yet placed proposes to
    its best column that has room, and each column accepts its best proposals that fit."""
    n, k = scores.shape
    assigned = torch.full((n,), -1, dtype=torch.long)
    left = capacity.clone()
    waiting = torch.arange(n)
    while len(waiting):
        mine = scores[waiting].masked_fill(left == 0, -math.inf)
        value, best = mine.max(1)
        order = torch.argsort(value, descending=True, stable=True)
        rows, best = waiting[order], best[order]
        by_column = torch.argsort(best, stable=True)  # best first within each column
        counts = torch.bincount(best, minlength=k)
        rank = torch.empty_like(best)
        rank[by_column] = torch.arange(len(best)) - (counts.cumsum(0) - counts)[best[by_column]]
        accepted = rank < left[best]
        assigned[rows[accepted]] = best[accepted]
        left -= torch.bincount(best[accepted], minlength=k)
        waiting = rows[~accepted]
    return assigned


def balanced_kmeans(
    x: Tensor, k: int, generator: torch.Generator, iters: int = 30
) -> tuple[Tensor, Tensor]:
    """(assignments (n,), centroids (k, d)) of the rows of ``x`` (n, d) in ``k`` clusters of
    equal size (to one point): at most ``iters`` balanced Lloyd iterations, stopping early
    when no assignment changes. Randomness comes only from ``generator``."""
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
        # every cluster holds n // k points or more, none is empty
        sums = torch.zeros_like(centroids).index_add_(0, assigned, x)
        centroids = sums / torch.bincount(assigned, minlength=k)[:, None]
    return assigned, centroids


def deskew(images: Tensor) -> Tensor:
    """``images`` (N, C, H, W; float) with every channel of every image sheared upright and
    centred by its own moments: the shear that makes the covariance of the pixels' x and y
    zero, and the shift that puts the centre of mass in the middle (bilinear resampling).
    Handwriting's slant and position then no longer count in a distance between images: the
    deskewing of LeCun et al. 1998's MNIST comparisons. A blank channel is left as it is."""
    n, c, h, w = images.shape
    x = images.reshape(n * c, h, w)
    ys = torch.arange(h, dtype=x.dtype)[:, None]
    xs = torch.arange(w, dtype=x.dtype)[None, :]
    mass = x.sum((1, 2))
    blank = mass <= 0
    mass = torch.where(blank, 1.0, mass)
    my = (x * ys).sum((1, 2)) / mass
    mx = (x * xs).sum((1, 2)) / mass
    dy, dx = ys - my[:, None, None], xs - mx[:, None, None]
    cyy = (x * dy * dy).sum((1, 2)) / mass
    cxy = (x * dx * dy).sum((1, 2)) / mass
    slant = torch.where(blank | (cyy <= 0), 0.0, cxy / cyy.clamp_min(1e-12))
    # affine_grid's coordinates run from -1 to 1 over each side (pixel centres, not corners)
    theta = torch.zeros(n * c, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 1] = slant * h / w
    theta[:, 0, 2] = torch.where(blank, 0.0, (mx - (w - 1) / 2) * 2 / w)
    theta[:, 1, 2] = torch.where(blank, 0.0, (my - (h - 1) / 2) * 2 / h)
    grid = F.affine_grid(theta, [n * c, 1, h, w], align_corners=False)
    upright = F.grid_sample(x[:, None], grid, align_corners=False)
    return upright.reshape(n, c, h, w)


def nearest_neighbours(x: Tensor, k: int, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """(indices (n, k), distances (n, k)) of each row's ``k`` nearest other rows of ``x``
    (n, d), nearest first, by Euclidean distance; computed ``chunk`` rows at a time."""
    indices, distances = [], []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], x)
        rows = torch.arange(len(d))
        d[rows, rows + start] = math.inf  # not its own neighbour
        nearest = d.topk(k, largest=False)
        indices.append(nearest.indices)
        distances.append(nearest.values)
    return torch.cat(indices), torch.cat(distances)


def spectral_embedding(x: Tensor, dims: int, generator: torch.Generator) -> Tensor:
    """The rows of ``x`` (n, d) as points (n, dims) on the unit sphere (dims <= n): the
    ``dims`` leading eigenvectors of the symmetric normalised affinity of their graph of
    :data:`NEIGHBOURS` nearest neighbours, each row scaled to unit length (Ng, Jordan and
    Weiss 2002, who keep as many as the clusters sought). Two neighbours i, j have affinity
    exp(-d_ij^2 / (s_i s_j)), s_i the distance from i to its farthest neighbour (Zelnik-Manor
    and Perona 2004), the graph made symmetric by adding its transpose. The eigenvectors come
    from :data:`SUBSPACE_ITERS` orthogonal iterations of I + S (S the normalised affinity)
    from a random start drawn from ``generator``; where the eigenvalues after the leading
    ``dims`` lie close to them (a long ring of points, say), the subspace found still mixes
    in the next eigenvectors."""
    x = x.float()
    n = len(x)
    if n < 2:
        return torch.ones(n, dims)
    k = min(NEIGHBOURS, n - 1)
    neighbours, dist = nearest_neighbours(x, k)
    scale = dist[:, -1]
    affinity = torch.exp(-dist.pow(2) / (scale[:, None] * scale[neighbours]).clamp_min(1e-12))
    to = neighbours.flatten()

    def graph(v: Tensor) -> Tensor:  # (A + A^T) v, A holding each row's affinities
        forward = (affinity[..., None] * v[neighbours]).sum(1)
        edges = affinity.flatten()[:, None] * v.repeat_interleave(k, 0)
        return forward.index_add_(0, to, edges)

    degree = graph(torch.ones(n, 1)).squeeze(1).clamp_min(1e-12)
    inv_sqrt = degree.rsqrt()[:, None]
    v = torch.randn(n, dims, generator=generator)
    for _ in range(SUBSPACE_ITERS):
        v = torch.linalg.qr(v + inv_sqrt * graph(inv_sqrt * v)).Q
    return F.normalize(v, dim=1)


def image_clusters(
    images: np.ndarray, k: int, generator: torch.Generator, labels: np.ndarray | None = None
) -> Tensor:
    """The cluster (0..k-1) of each image of ``images`` (N, C, H, W; uint8): balanced k-means
    of the :func:`spectral_embedding` (k dimensions, at most :data:`EMBEDDING_DIMS`) of their
    pixels, scaled to [0, 1] and :func:`deskew`-ed, computed on the CPU. With ``labels`` (N,
    classes 0..L-1), ``k`` clusters are found within each class, class by class: an image of
    class y in its class's cluster j is in cluster y * k + j (0..L * k - 1)."""
    if labels is not None:
        clusters = torch.empty(len(images), dtype=torch.long)
        for y in range(int(labels.max()) + 1 if len(labels) else 0):
            rows = np.flatnonzero(labels == y)
            if len(rows) < k:
                raise ConfigError(
                    f"model.categories: {k} clusters within each class need at least {k} "
                    f"training images of each; class {y} has {len(rows)}"
                )
            found = image_clusters(images[rows], k, generator)
            clusters[torch.from_numpy(rows)] = y * k + found
        return clusters
    if k > len(images):
        raise ConfigError(
            f"model.categories: {k} clusters need at least {k} training images; the dataset "
            f"has {len(images)}"
        )
    pixels = deskew(torch.from_numpy(images).float().div_(255.0)).flatten(1)
    embedded = spectral_embedding(pixels, min(k, EMBEDDING_DIMS), generator)
    return balanced_kmeans(embedded, k, generator)[0]


def channel_clusters(images: np.ndarray, k: int, generator: torch.Generator) -> Tensor:
    """The category (0..k^C - 1) of each image of ``images`` (N, C, H, W; uint8) whose
    channels each hold a picture of their own (Stacked MNIST): every distinct picture found in
    any channel is put in one of ``k`` clusters as a one-channel image (:func:`image_clusters`,
    so a picture has the same cluster in every channel), and an image's category is its
    channels' clusters read as a number in base k, the first channel the most significant
    (:func:`~digitgan.data.stacked.stack_labels`, as Stacked MNIST's labels;
    :func:`digitgan.models.base.category_parts` reads it back)."""
    n, c, *size = images.shape
    distinct, which = np.unique(images.reshape(n * c, -1), axis=0, return_inverse=True)
    if k > len(distinct):
        raise ConfigError(
            f"model.categories: {k} clusters of each channel need at least {k} distinct "
            f"pictures; the dataset's channels hold {len(distinct)}"
        )
    found = image_clusters(distinct.reshape(-1, 1, *size), k, generator).numpy()
    return torch.from_numpy(stack_labels(found[which.reshape(n, c)], k))
