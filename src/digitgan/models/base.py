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

An unconditional pair may instead carry a categorical code (``model.categories`` = K, InfoGAN:
Chen et al. 2016, "InfoGAN: interpretable representation learning by information maximizing
generative adversarial nets"): the generator reads the argmax of the last K entries of ``z``
as one of K categories and sees it one-hot in their place (so the noise is drawn as ever, and
every sampler, exported model and page gets the categories for free: the argmax of K
independent draws is uniform), and the discriminator gains a head that predicts the category
from its features, trained with G to make the categories recognisable. With
``model.self_condition`` the discriminator also judges every image, real or generated, as the
category its head guesses, by projection (after the self-conditioned GAN of Liu et al. 2020,
"Diverse image generation via self-conditioned GANs", whose clusters come from k-means on D's
features instead). With ``model.clusters`` it has no code head and judges every image as a
category it is given, as a conditional discriminator judges a label: a real image's cluster
(fixed before training: :mod:`digitgan.data.clusters`), a generated image's code (Lucic et
al. 2019, "High-fidelity image generation with fewer labels", whose clusters come from
self-supervised features). A conditional pair may carry the code too, with ``model.clusters``
alone: its categories are clusters within each class, G reads the label and the code, and D
judges an image of class y and category k by the label y * K + k.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

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


def one_hot(index: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Integers (...) -> one-hot rows (..., k) (a comparison: batched by vmap, exported by
    ONNX)."""
    return (index.unsqueeze(-1) == torch.arange(k, device=index.device)).to(dtype)


def part_size(k: int, parts: int) -> int:
    """The categories of each of a code's ``parts`` parts, for ``k`` categories in all (k is
    that number to the power ``parts``)."""
    return round(k ** (1 / parts)) if parts > 1 else k


def category_parts(category: torch.Tensor, k: int, parts: int) -> torch.Tensor:
    """Each of ``parts`` parts (N, parts) of the categories (N,) among ``k``: their digits in
    base :func:`part_size`, the first part the most significant (Stacked MNIST's red, green,
    blue digits of a label)."""
    powers = _place_values(k, parts, category.device)
    return category.unsqueeze(-1).div(powers, rounding_mode="floor").remainder(part_size(k, parts))


def _place_values(k: int, parts: int, device) -> torch.Tensor:
    """What each part of a category among ``k`` counts for (parts,): the powers of the base,
    the first part's the highest."""
    return part_size(k, parts) ** torch.arange(parts - 1, -1, -1, device=device)


def _code_blocks(z: torch.Tensor, k: int, parts: int) -> torch.Tensor:
    """The entries of noise ``z`` (N, z_dim) that pick its category among ``k``: the last
    ``parts`` blocks of :func:`part_size` entries, as (N, parts, size)."""
    base = part_size(k, parts)
    return z[:, z.shape[1] - parts * base :].unflatten(1, (parts, base))


def code_of(z: torch.Tensor, k: int, parts: int = 1) -> torch.Tensor:
    """The category (N,) that noise ``z`` (N, z_dim) picks among ``k``: the argmax of its
    last k entries; of a code in ``parts`` parts, each part the argmax of its own block of the
    last entries (:func:`category_parts` read back)."""
    return (_code_blocks(z, k, parts).argmax(2) * _place_values(k, parts, z.device)).sum(1)


Category = int | Sequence[int | str | None]
"""A learnt category as a sampler takes it: its number among K, or, for a code in parts, one
value per part, each that part's category or None (also written "any": the noise decides)."""


def category_choice(category: Category, k: int, parts: int = 1) -> list[int | None]:
    """The category each part of a code in ``parts`` parts among ``k`` is made to take for
    ``category`` (see :data:`Category`; None: any); a ValueError saying what is expected
    when ``category`` is none of those."""
    base = part_size(k, parts)

    def whole(v, top: int) -> bool:  # (numpy's integers too)
        return isinstance(v, Integral) and not isinstance(v, bool) and 0 <= v < top

    if whole(category, k):
        return category_parts(torch.tensor(int(category)), k, parts).tolist()
    if parts > 1 and isinstance(category, list | tuple) and len(category) == parts:
        values = [None if v is None or (isinstance(v, str) and v == "any") else v for v in category]
        if all(v is None or whole(v, base) for v in values):
            return [None if v is None else int(v) for v in values]
    either = f" or {parts} values (one per part, each 0 to {base - 1} or any)" if parts > 1 else ""
    raise ValueError(f"expected an integer from 0 to {k - 1}{either}")


def category_text(category: Category) -> str:
    """``category`` as the command line writes it: ``7``, or part by part ``3,any,7``."""
    if isinstance(category, list | tuple):
        return ",".join("any" if v is None else str(v) for v in category)
    return str(category)


def with_code(z: torch.Tensor, k: int, category: Category, parts: int = 1) -> torch.Tensor:
    """Noise ``z`` (N, z_dim) made to pick ``category`` among ``k`` (see :func:`code_of`): in
    each row and the block of each part that the category fixes (:func:`category_choice`),
    the largest entry trades places with the entry at the category's part. The entries are
    independent draws of one distribution, so the rows are distributed as noise conditioned
    on picking ``category``; a row that picks it already is unchanged."""
    z = z.clone()
    blocks = _code_blocks(z, k, parts)  # a view: the swaps write into z
    rows = torch.arange(z.shape[0])
    for part, want in enumerate(category_choice(category, k, parts)):
        if want is None:
            continue
        code = blocks[:, part]
        top = code.argmax(1)
        largest = code[rows, top].clone()
        code[rows, top] = code[rows, want]
        code[rows, want] = largest
    return z


class Generator(nn.Module):
    """z (N, z_dim) [+ labels (N,)] -> images (N, C, H, W) in ``out_range``."""

    categories = 0
    """K of the categorical code (0: none); set by :func:`~digitgan.models.build_models`."""
    code_parts = 1
    """The parts the code comes in (``model.code_parts``): K is their categories' product."""

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
        return self.body(self.body_input(z, labels)).view(z.shape[0], *self.image_shape)

    def body_input(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """What the body reads for noise ``z`` and (already checked) ``labels``: ``z`` with the
        categorical code one-hot in its last K entries (each part's one-hot in its own block,
        for a code in parts), then the label's embedding."""
        if self.categories:
            k, parts = self.categories, self.code_parts
            blocks = _code_blocks(z, k, parts)
            code = one_hot(blocks.argmax(2), blocks.shape[2], z.dtype).flatten(1)
            z = torch.cat([z[:, : z.shape[1] - code.shape[1]], code], 1)
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return z


class Discriminator(nn.Module):
    """images (N, C, H, W) [+ labels (N,)] -> one logit per image (N,)."""

    label_parts = 1
    """The parts D's projected labels come in (:meth:`project_labels`)."""

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
        self.feature_dim = feature_dim
        self.code_head: nn.Linear | None = None
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

    def add_code_head(self, k: int, self_condition: bool = False, wrap=lambda m: m) -> None:
        """A head predicting the generator's categorical code (K logits) from the features;
        with ``self_condition``, the logit also projects the features on an embedding of the
        category the head guesses (as a projection discriminator does on a label)."""
        self.code_head = nn.Linear(self.feature_dim, k)
        if self_condition:
            self.embed = wrap(nn.Embedding(k, self.feature_dim))

    def project_labels(self, k: int, wrap=lambda m: m, parts: int = 1) -> None:
        """Make D a projection discriminator on labels 0..k-1 (a conditional D's class
        embedding gives way), which it then requires (``model.clusters``: a real image's
        cluster, a generated image's category). Labels of a code in ``parts`` parts
        (:func:`category_parts`) are embedded as the sum of their parts' embeddings, one
        table row per part and value, so that each row learns from every label sharing it."""
        self.num_classes, self.cond_d, self.label_parts = k, "projection", parts
        self.embed = wrap(nn.Embedding(parts * part_size(k, parts), self.feature_dim))

    def embedding(self, y: torch.Tensor) -> torch.Tensor:
        """The projection's embedding (N, features) of labels ``y`` (N,)."""
        if self.label_parts == 1:
            return self.embed(y)
        base = part_size(self.num_classes, self.label_parts)
        rows = category_parts(y, self.num_classes, self.label_parts)
        rows = rows + base * torch.arange(self.label_parts, device=y.device)
        return self.embed(rows).sum(1)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, codes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One logit per image; with ``codes``, also the code head's (N, K) logits."""
        check_labels(labels, x.shape[0], self.num_classes)
        if self.cond_d == "concat":
            planes = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.features(x)
        out = self.head(h).squeeze(1)
        guess = None if self.code_head is None else self.code_head(h)
        if self.embed is not None:
            # self-conditioned: each image is judged as the category the head guesses
            y = labels if self.num_classes else guess.detach().argmax(1)
            out = out + (self.embedding(y) * h).sum(dim=1)
        return (out, guess) if codes else out
