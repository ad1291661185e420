"""What every generator and discriminator shares: the calling convention and conditioning.

A :class:`Generator` wraps a ``body`` network from an input vector to images; a
:class:`Discriminator` wraps a ``features`` network from images to a feature vector
and puts a linear head on it. Architectures (mlp, dcgan) only build those bodies;
class conditioning is done here, once, for all of them:

- generator: the label's learned embedding is concatenated to ``z``;
- discriminator, ``cond_d = "projection"`` (Miyato & Koyama 2018, "cGANs with
  Projection Discriminator"): logit = head(h) + <embed(y), h>;
- discriminator, ``cond_d = "concat"``: one-hot label planes are appended to the
  image as extra input channels.

Both take ``labels=None`` for unconditional models; a conditional model requires
labels in 0..num_classes-1 and says so clearly otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_labels(labels: torch.Tensor | None, n: int, num_classes: int) -> None:
    """Labels must be given to (and only to) a conditional model, one per sample.

    Shapes only, so the check costs no device sync; values are checked where labels come
    from a user (:func:`check_label_values`), the trainer draws its own in range.
    """
    if num_classes == 0:
        if labels is not None:
            raise ValueError("this model is unconditional: it takes no labels")
        return
    if labels is None:
        raise ValueError(f"this model is conditional: give a label in 0..{num_classes - 1}")
    if labels.shape != (n,):
        raise ValueError(f"expected {n} labels, got shape {tuple(labels.shape)}")


def check_label_values(labels: torch.Tensor, num_classes: int) -> None:
    """Every label lies in 0..num_classes-1."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"label {bad} is out of range 0..{num_classes - 1}")


class Generator(nn.Module):
    """z (N, z_dim) [+ labels (N,)] -> images (N, C, H, W) in ``out_range``."""

    def __init__(
        self, body: nn.Module, z_dim: int, image_shape, out_range, num_classes=0, embed_dim=0
    ):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = tuple(image_shape)
        self.out_range = tuple(out_range)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.body = body

    @staticmethod
    def input_dim(z_dim: int, num_classes: int, embed_dim: int) -> int:
        """Width of the body's input: z, plus the label embedding when conditional."""
        return z_dim + (embed_dim if num_classes else 0)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, z.shape[0], self.num_classes)
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.body(z).view(z.shape[0], *self.image_shape)


class Discriminator(nn.Module):
    """images (N, C, H, W) [+ labels (N,)] -> one logit per image (N,)."""

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        head: nn.Module,
        num_classes=0,
        cond_d="projection",
        wrap=lambda m: m,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.cond_d = cond_d if num_classes else "none"
        self.features = features
        self.head = head
        self.embed = (
            wrap(nn.Embedding(num_classes, feature_dim)) if self.cond_d == "projection" else None
        )

    @staticmethod
    def in_channels(channels: int, num_classes: int, cond_d: str) -> int:
        """Image channels the features network sees: plus one plane per class for concat."""
        return channels + (num_classes if num_classes and cond_d == "concat" else 0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, x.shape[0], self.num_classes)
        if self.cond_d == "concat":
            planes = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.features(x)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out
