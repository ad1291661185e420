"""Balanced spectral clustering (model.clusters' categories): neighbours, the embedding,
balanced k-means' recovery and equal sizes, determinism, refusals."""

import math

import numpy as np
import pytest
import torch

from digitgan.data.clusters import (
    balanced_assignment,
    balanced_kmeans,
    channel_clusters,
    deskew,
    fill,
    image_clusters,
    nearest_neighbours,
    spectral_embedding,
)
from digitgan.errors import ConfigError


def _blobs(sizes, spread=0.05, seed=0):
    """Points around the corners of a simplex (one blob per size), and each point's blob."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(sizes)) * 4
    which = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return centres[which] + spread * torch.randn(len(which), len(sizes), generator=g), which


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings split the points alike (whatever the clusters' numbering)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_equal_blobs_are_found_exactly():
    x, which = _blobs([50, 50, 50, 50])
    assigned, centroids = balanced_kmeans(x, 4, torch.Generator().manual_seed(1))
    assert _same_partition(assigned, which)
    for j in range(4):  # each centroid is its cluster's mean
        torch.testing.assert_close(centroids[j], x[assigned == j].mean(0))


def test_clusters_come_out_equal_in_size_even_when_the_data_are_not():
    x, _ = _blobs([300, 200, 101], spread=1.0)
    assigned, _ = balanced_kmeans(x, 3, torch.Generator().manual_seed(0))
    assert sorted(torch.bincount(assigned, minlength=3).tolist()) == [200, 200, 201]


def test_fill_gives_each_row_its_best_column_that_has_room():
    scores = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.5], [0.0, 0.2]])
    # column 0 takes its two best proposals (rows 0, 1); row 2 then goes to column 1
    assert fill(scores, torch.tensor([2, 2])).tolist() == [0, 0, 1, 1]
    assert fill(scores, torch.tensor([4, 0])).tolist() == [0, 0, 0, 0]


def test_deskew_stands_a_slanted_stroke_upright_in_the_middle():
    image = torch.zeros(1, 2, 28, 28)  # channel 0: a slanted stroke; channel 1: blank
    for y in range(6, 22):
        image[0, 0, y, int(10 + 0.5 * (y - 6))] = 1.0
    out = deskew(image)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")

    def moments(x):
        m = x.sum()
        my, mx = (x * ys).sum() / m, (x * xs).sum() / m
        return my, mx, (x * (xs - mx) * (ys - my)).sum() / m

    assert moments(image[0, 0])[2] > 5  # x grows with y: a slant
    my, mx, cxy = moments(out[0, 0])
    assert my == pytest.approx(13.5, abs=1e-3) and mx == pytest.approx(13.5, abs=1e-3)
    assert abs(cxy) < 1e-3 and out[0, 0].sum() == pytest.approx(16, rel=1e-4)
    assert torch.equal(out[0, 1], image[0, 1])


def test_the_balanced_assignment_splits_points_by_distance_and_evenly():
    # four points, two clusters: each point nearer to cluster 0, so plain k-means would put
    # them all there; the balanced plan gives each cluster the two points it suits best
    cost = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 1.5], [0.0, 2.5]])
    assert balanced_assignment(cost).tolist() == [1, 0, 1, 0]


def test_the_same_seed_gives_the_same_clusters():
    x, _ = _blobs([40] * 6, spread=2.0)
    a = balanced_kmeans(x, 6, torch.Generator().manual_seed(3))[0]
    b = balanced_kmeans(x, 6, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_image_clusters_group_the_images_and_refuse_more_clusters_than_images():
    images = np.zeros((12, 1, 4, 4), np.uint8)
    images[6:, :, 1:3, 1:3] = 255  # six black images and six with a white square
    clusters = image_clusters(images, 2, torch.Generator().manual_seed(0))
    assert clusters.dtype == torch.long and clusters.shape == (12,)
    assert len(set(clusters[:6].tolist())) == len(set(clusters[6:].tolist())) == 1
    assert clusters[0] != clusters[6]
    with pytest.raises(ConfigError, match=r"model\.categories: 13 clusters need at least 13"):
        image_clusters(images, 13, torch.Generator())
    with pytest.raises(ValueError, match="cannot make 0 clusters"):
        balanced_kmeans(torch.zeros(3, 2), 0, torch.Generator())


def test_channel_clusters_cluster_each_picture_once_and_read_the_channels_in_base_k():
    """Stacked images: a picture has one cluster whichever channel holds it, and an image's
    category is its channels' clusters as a number in base k, the first channel first."""
    blank, square = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    square[1:3, 1:3] = 255
    pictures = np.stack([blank, square])
    which = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 0], [1, 0, 1]])
    images = pictures[which]  # (6, 3, 4, 4): each channel a blank or a square
    category = channel_clusters(images, 2, torch.Generator().manual_seed(0))
    square_cluster = int(category[3]) & 1  # the image of three squares
    bits = np.where(which == 1, square_cluster, 1 - square_cluster)
    assert category.tolist() == (bits @ [4, 2, 1]).tolist()
    with pytest.raises(ConfigError, match=r"model\.categories: 3 clusters of each channel need"):
        channel_clusters(images, 3, torch.Generator())


def test_clusters_within_classes_split_each_class_evenly_and_keep_it():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 6, 6), generator=g).to(torch.uint8).numpy()
    labels = np.repeat([2, 0, 1], 10)  # classes 0..2, 10 images each
    clusters = image_clusters(images, 2, torch.Generator().manual_seed(0), labels)
    assert torch.equal(clusters // 2, torch.from_numpy(labels))  # label * 2 + its cluster
    assert torch.bincount(clusters, minlength=6).tolist() == [5] * 6
    with pytest.raises(ConfigError, match=r"model\.categories: 11 clusters within each class"):
        image_clusters(images, 11, torch.Generator(), labels)


def test_nearest_neighbours_leave_each_point_out_of_its_own():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    indices, dist = nearest_neighbours(x, 2, chunk=3)  # two chunks: the second starts at 3
    assert indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert dist.tolist() == [[1.0, 3.0], [1.0, 2.0], [2.0, 3.0], [4.0, 6.0]]


def test_the_spectral_embedding_separates_rings_that_k_means_cannot():
    # two concentric rings of 50 points: no straight cut separates them, so k-means of the
    # points cannot; in the neighbour graph they are two components (each point's 10
    # nearest lie on its own ring), which the embedding puts apart
    angle = torch.linspace(0, 2 * math.pi, 51)[:-1]
    circle = torch.stack([angle.cos(), angle.sin()], 1)
    x, which = torch.cat([circle, 4 * circle]), torch.arange(100) // 50
    plain = balanced_kmeans(x, 2, torch.Generator().manual_seed(0))[0]
    assert not _same_partition(plain, which)
    embedded = spectral_embedding(x, 2, torch.Generator().manual_seed(0))
    assert embedded.shape == (100, 2)
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(100))
    assert _same_partition(balanced_kmeans(embedded, 2, torch.Generator().manual_seed(0))[0], which)
