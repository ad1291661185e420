"""Typed configuration: every option, its default, its documentation and its checks.

A :class:`Config` has one section per concern (``data``, ``model``, ``loss``,
``augment``, ``optim``, ``train``, ``log``). Each field is declared once, with its help text
and constraints in the field metadata; :func:`validate` checks them all before
any work starts and names the offending field in its message.

Presets are named sets of overrides on top of the defaults; the defaults are
the ``seed`` preset, the vanilla GAN of the seed article (DESIGN.md section 1).
A configuration is built as: preset, then a TOML file (``--config``), then
``--set section.key=value`` overrides, then the common flags.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import torch

from .augment import AUGMENTS, TRANSFORMS
from .data.registry import DATASET_OPTIONS
from .errors import ConfigError
from .fileio import read_text_bounded
from .losses import OBJECTIVES, PENALTIES
from .models import ARCHITECTURES, INITS
from .models.base import part_size
from .options import Registry, opt


class _Parts:
    """A section with a table of options for registered entries (``model.mlp``, ``loss.gp``).

    ``PARTS`` names the registry the tables come from, and the field that chooses the one in
    use, if one is chosen (``model.arch``); otherwise every entry's table applies (each
    penalty is on when its weight is above 0). A table is made with its defaults on first use.
    """

    PARTS: tuple[Registry, str | None]

    def part(self, name: str):
        """The option table of entry ``name`` (a ConfigError if it has none)."""
        parts = self.__dict__.setdefault("_parts", {})
        if name not in parts:
            options = type(self).PARTS[0].entry(name).options
            if options is None:
                raise ConfigError(f"{type(self).PARTS[0].key} {name!r} has no options")
            parts[name] = options()
        return parts[name]

    def __getattr__(self, name: str):
        """``cfg.model.mlp``: an entry's option table, as an attribute."""
        if not name.startswith("_") and name in type(self).PARTS[0]:
            return self.part(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def part_names(self) -> list[str]:
        """The entries whose tables this section holds: the chosen one, or all of them."""
        registry, chooser = type(self).PARTS
        names = [getattr(self, chooser)] if chooser else list(registry)
        return [n for n in names if n in registry and registry.entry(n).options is not None]

    @property
    def options(self):
        """The option table of the chosen entry (``model.<arch>``, ``data.<dataset>``), or
        None when it has none."""
        names = self.part_names()
        return self.part(names[0]) if names else None

    def __eq__(self, other) -> bool:
        return (
            type(self) is type(other)
            and _plain(self) == _plain(other)
            and all(_plain(self.part(n)) == _plain(other.part(n)) for n in self.part_names())
        )


def _plain(section) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}


@dataclass(eq=False)
class DataConfig(_Parts):
    PARTS = (DATASET_OPTIONS, "dataset")

    dataset: str = opt(
        "mnist20k", "dataset spec: a registered name (digitgan data list), idx:DIR or npz:FILE"
    )
    data_dir: str = opt("", "where downloaded datasets are cached ('' = $DIGITGAN_DATA or cache)")
    batch_size: int = opt(
        128, "images per discriminator batch (and noise vectors per G step)", min=1
    )


@dataclass(eq=False)
class ModelConfig(_Parts):
    PARTS = (ARCHITECTURES, "arch")

    arch: str = opt("mlp", "generator/discriminator architecture", choices=ARCHITECTURES.names)
    z_dim: int = opt(100, "dimension of the noise vector z", min=1)
    noise: str = opt(
        "uniform",
        "noise distribution: uniform(-1, 1) or normal(0, 1)",
        choices=("uniform", "normal"),
    )
    spectral_norm: bool = opt(False, "spectral normalisation on every discriminator layer")
    conditional: bool = opt(False, "class-conditional G and D (labels from the dataset)")
    categories: int = opt(
        0,
        "a categorical code of K categories learnt without labels (InfoGAN; conditional "
        "models only with model.clusters): the argmax of z's last K entries picks one, G sees "
        "it one-hot, and a head on D predicts it (loss.code_weight); 0 = off",
        min=0,
    )
    self_condition: bool = opt(
        False,
        "model.categories: D also judges each image, real or generated, as the category its "
        "code head guesses, by projection (a self-conditioned discriminator)",
    )
    clusters: bool = opt(
        False,
        "model.categories: the categories are K clusters of equal size found in the deskewed "
        "training images before training (balanced spectral clustering; no labels used), and D "
        "judges each real image as its cluster and each generated one as its code's category, "
        "by projection, with no code head (loss.code_weight unused): a conditional GAN on "
        "clusters (Lucic et al. 2019). For a conditional model, K clusters within each class",
    )
    code_parts: int = opt(
        1,
        "model.categories: the code in P parts of K^(1/P) categories each (K a P-th power): "
        "each part is the argmax of its own block of z's last entries and G sees each one-hot; "
        "with model.clusters, D embeds a category as the sum of its parts' embeddings, and "
        "part j is the cluster of image channel j (P = the image channels, each channel's "
        "pictures clustered as one-channel images: Stacked MNIST's 1,000 modes as 3 parts of "
        "10)",
        min=1,
    )
    embed_dim: int = opt(32, "conditional: size of the generator's label embedding", min=1)
    cond_d: str = opt(
        "projection",
        "conditional: how D sees the label (projection or concat)",
        choices=("projection", "concat"),
    )
    init: str = opt(
        "seed",
        "weight init: 'seed' = Normal(0, 1/sqrt(fan_in/2)) dense weights and zero biases, "
        "'dcgan' = Normal(0, 0.02), 'torch' = PyTorch's layer defaults",
        choices=lambda: tuple(INITS),
    )


@dataclass(eq=False)
class LossConfig(_Parts):
    PARTS = (PENALTIES, None)

    objective: str = opt("ns", "adversarial objective", choices=OBJECTIVES.names)
    label_smoothing: float = opt(
        0.0,
        "one-sided label smoothing: real target 1 - s (for objectives with a real target)",
        min=0.0,
        max=0.5,
    )
    code_weight: float = opt(
        1.0,
        "model.categories: weight of the code head's cross-entropy on generated images in D's "
        "and G's losses (InfoGAN's mutual-information term; 1 in the paper)",
        min=0.0,
    )
    cluster_weight: float = opt(
        0.0,
        "model.categories: weight of information maximisation on the code head's guesses for "
        "real images (each confident, the categories equally used; Krause et al. 2010) in D's "
        "loss; 0 = off",
        min=0.0,
    )
    cluster_views: list[str] = opt(
        [],
        "loss.cluster_weight: transforms (augment.policy's names, each always applied) that "
        "make a second view of every real image; the clustering term is then the mutual "
        "information of the code head's guesses on the image and on its view (IIC, Ji et al. "
        "2019), which asks the categories to survive the transforms ([] = information "
        "maximisation on the images alone)",
        choices=TRANSFORMS.names,
    )
    instance_noise: float = opt(
        0.0,
        "std of Gaussian noise added to D's inputs, annealed linearly to 0 (0 = off)",
        min=0.0,
    )
    lazy_every: int = opt(
        1,
        "lazy regularisation (Karras et al. 2020): the penalties every N discriminator steps, "
        "scaled by N (1 = every step)",
        min=1,
    )
    penalty_end: float = opt(
        1.0,
        "every penalty's weight at the end of training, as a fraction of its start, reached "
        "along a half cosine (1 = constant)",
        min=0.0,
        max=1.0,
    )

    def penalties(self) -> list[tuple[str, float]]:
        """(name, weight) of every penalty that is on (weight above 0), in registry order."""
        on = [(n, float(self.part(n).weight)) for n in self.part_names()]
        return [(n, w) for n, w in on if w > 0]


@dataclass(eq=False)
class AugmentConfig(_Parts):
    PARTS = (AUGMENTS, "mode")

    mode: str = opt(
        "none",
        "augmentation of every image D sees, real and generated: diffaugment (a fixed strength, "
        "Zhao et al. 2020) or ada (a strength adapted to D's overfitting, Karras et al. 2020)",
        choices=lambda: ("none", *AUGMENTS.names()),
    )
    policy: list[str] = opt(
        ["color", "translation", "cutout"],
        "the transforms, in order (color applies to images of 3 or more channels only)",
        choices=TRANSFORMS.names,
    )


@dataclass
class OptimConfig:
    lr_g: float = opt(1e-3, "generator Adam learning rate", min=0.0)
    lr_d: float = opt(1e-3, "discriminator Adam learning rate", min=0.0)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-8, "Adam epsilon", min=0.0)
    lr_end: float = opt(
        1.0,
        "both learning rates at the end of training (train.iters), as a fraction of their "
        "start, reached along a half cosine (1 = constant)",
        min=0.0,
        max=1.0,
    )


@dataclass
class TrainConfig:
    iters: int = opt(
        10_000, "total training iterations (one iteration = D step(s) + G step)", min=0
    )
    d_steps: int = opt(1, "discriminator steps per generator step", min=1)
    fast_step: bool = opt(
        True,
        "use a specialised kernel where one handles the run (the dense ReLU kernel: "
        "unconditional MLPs, fp32, one process, no penalties, instance noise or augmentation): "
        "the same math as the generic step with less overhead; false = always the generic step",
    )
    cuda_graph: bool = opt(
        True,
        "on CUDA, record the training iteration once as a CUDA graph and replay it, where it "
        "applies (one process; no compile, bf16, augmentation, instance noise, cluster views, "
        "or lazy or scheduled penalties): the same iterations without launching each "
        "operation from Python; false = launch every operation",
    )
    ema_decay: float = opt(
        0.0,
        "exponential moving average of G's weights with this decay, used for samples and "
        "evaluation (0 = off; 0.999 is typical); update t uses min(decay, (1 + t) / (10 + t)), "
        "a warm-up that reaches 0.999 at update 8,990 and 0.9995 at 17,990",
        min=0.0,
        max=1.0,
    )
    max_minutes: float = opt(
        0.0,
        "stop training after this many minutes of wall-clock time in the training loop, as if "
        "train.iters were reached there: final sample grid and checkpoint saved (0 = no limit; "
        "each train or resume call gets the whole budget)",
        min=0.0,
    )
    seed: int = opt(0, "random seed for init, data order and noise", min=0)
    device: str = opt("auto", "auto (cuda if available), cpu or cuda[:N]")
    precision: str = opt(
        "fp32",
        "fp32; bf16: G and D forward passes under bfloat16 autocast, losses, weights, "
        "optimiser state and checkpoints in float32; auto: bf16 on a CPU that multiplies "
        "bfloat16 in hardware (AMX units or AVX-512 BF16: Intel Xeon 4th generation and later, "
        "AMD EPYC from Zen 4), fp32 elsewhere and for --seeds trained stacked "
        "(train.seeds_mode), which refuse bf16; tf32 (CUDA only): fp32 with "
        "the matrix products on the tensor cores in TF32 (10-bit mantissa inputs, float32 "
        "sums), as PyTorch's convolutions on CUDA are by default",
        choices=("fp32", "bf16", "auto", "tf32"),
    )
    cudnn_benchmark: bool = opt(
        False,
        "on CUDA, let cuDNN time its convolution algorithms on the first iterations and keep "
        "the fastest for the run's fixed shapes (torch.backends.cudnn.benchmark)",
    )
    compile: bool = opt(
        False,
        "compile G and D with torch.compile (needs a C compiler; the first iterations are "
        "slow while it compiles; checkpoints are unchanged)",
    )
    seeds_mode: str = opt(
        "auto",
        "how --seeds trains several seeds: stacked (their models as one, each step one set of "
        "larger operations), sequential (one after another in the process, each its own "
        "step), or auto: stacked on a GPU and for the mlp architecture, sequential for "
        "convolutional models on a CPU, where stacking them was measured slower",
        choices=("auto", "stacked", "sequential"),
    )


@dataclass
class LogConfig:
    sample_every: int = opt(1000, "save a sample grid every N iterations (0 = never)", min=0)
    grid_rows: int = opt(4, "sample grids are grid_rows x grid_rows images", min=1, max=32)
    print_every: int = opt(
        1000, "print the seed-style loss line every N iterations (0 = never)", min=0
    )
    tb_every: int = opt(
        100, "TensorBoard scalars and metrics.jsonl every N iterations (0 = never)", min=0
    )
    histograms: bool = opt(True, "also write weight/bias histograms at each TensorBoard step")
    ckpt_every: int = opt(1000, "save a checkpoint every N iterations (0 = only at the end)", min=0)
    eval_every: int = opt(
        0,
        "every N iterations: FID and class balance of generated samples against the test "
        "split, logged as eval/*, and checkpoints/best.safetensors kept by FID (0 = never)",
        min=0,
    )
    eval_samples: int = opt(2000, "generated images per evaluation during training", min=2)
    eval_classifier: str = opt(
        "", "classifier weights file for log.eval_every ('' = the one shipped for the dataset)"
    )


SECTIONS = ("data", "model", "loss", "augment", "optim", "train", "log")
MAX_INT = 2**31 - 1
"""No integer option may exceed this (a typo, not a size any tensor or loop could have)."""


@dataclass
class Config:
    """The complete, resolved configuration of a run."""

    preset: str = "seed"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        """``{"preset": ..., section: {field: value, part: {field: value}}}``."""
        out: dict[str, Any] = {"preset": self.preset}
        for sname in SECTIONS:
            section = getattr(self, sname)
            out[sname] = copy.deepcopy(_plain(section))
            if isinstance(section, _Parts):
                for name in section.part_names():
                    out[sname][name] = copy.deepcopy(_plain(section.part(name)))
        return out

    def flat(self) -> dict[str, Any]:
        """Every field by its dotted key (``model.mlp.g_hidden``), the preset excluded."""
        out = {}
        for prefix, table in _tables(self):
            out |= {f"{prefix}.{k}": v for k, v in _plain(table).items()}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> Config:
        """Build from a nested dict (a TOML document or checkpoint metadata); validates."""
        cfg = cls()
        apply_dict(cfg, d, source)
        validate(cfg)
        return cfg

    def replace(self, **overrides: Any) -> Config:
        """A validated copy with ``section__key=value`` or ``{"section.key": value}`` overrides.

        Example: ``cfg.replace(train__iters=500, data__batch_size=64)``.
        """
        new = copy.deepcopy(self)
        for key, value in overrides.items():
            set_value(new, key.replace("__", "."), value, source="override")
        validate(new)
        return new


# --- presets --------------------------------------------------------------------------------

# The convolutional presets share DCGAN's recipe (Radford et al. 2016): normal noise,
# Adam(2e-4, beta1 0.5), batch 64, N(0, 0.02) init, sized to train on a CPU in minutes.
_CONV = {
    "model": {
        "arch": "dcgan",
        "noise": "normal",
        "z_dim": 64,
        "init": "dcgan",
        "dcgan": {"g_channels": 32, "d_channels": 32},
    },
    "data": {"batch_size": 64},
    "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999},
    "train": {"iters": 5000, "ema_decay": 0.999},
    "log": {"sample_every": 500, "ckpt_every": 1000},
}


def _conv(base: dict[str, Any] | None = None, **sections: dict[str, Any]) -> dict[str, Any]:
    """The shared convolutional recipe (or ``base``, a preset made from it) with some fields
    changed (tables merged key by key)."""

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    return merge(base or _CONV, sections)


_HINGE_SN = _conv(
    model={"spectral_norm": True},
    loss={"objective": "hinge"},
    optim={"beta1": 0.0, "beta2": 0.999},
)


# tuned for time to quality on a CPU (benchmarks/RESULTS.md): three times the learning rate,
# decayed to a tenth along a half cosine, bfloat16 where the CPU multiplies it in hardware
# (cdcgan, stacked)
_FAST = {"optim": {"lr_g": 6e-4, "lr_d": 6e-4, "lr_end": 0.1}, "train": {"precision": "auto"}}

# the class-conditional DCGAN at DCGAN's constant learning rate: fashion, and the base of cdcgan
_CONDITIONAL = _conv(
    model={"conditional": True, "spectral_norm": True},
    loss={"objective": "hinge"},
    train={"iters": 20000},
    log={"sample_every": 1000, "ckpt_every": 2000},
)

# the best conditional recipe: cdcgan, and the base of clusters
_CDCGAN = _conv(_conv(_CONDITIONAL, **_FAST), optim={"beta2": 0.99}, train={"iters": 10000})

# the best unconditional recipe: clusters, and the base of stacked
_CLUSTERS = _conv(
    _CDCGAN,
    model={"conditional": False, "categories": 100, "clusters": True, "z_dim": 200},
    train={"iters": 20000},
)

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": (
        "the seed article's vanilla GAN: 128-unit MLPs, uniform noise, Adam, batch 128, "
        "10,000 iterations",
        {},
    ),
    "dcgan": (
        "convolutional G and D (DCGAN), non-saturating loss, BatchNorm in D, EMA of G: "
        "smooth digits in minutes on a CPU",
        _conv(model={"dcgan": {"d_norm": "batch"}}),
    ),
    "cdcgan": (
        "class-conditional DCGAN (label embedding in G, projection D with spectral norm, "
        "hinge loss), learning rate 6e-4 decayed to a tenth, Adam beta2 0.99, 10,000 "
        "iterations, bfloat16 on CPUs with bf16 units, 5 clusters within each class (a code "
        "in z's last 5 entries, judged by D with the label): the best digits here; choose "
        "one with --label",
        _conv(_CDCGAN, model={"categories": 5, "clusters": True, "z_dim": 69}),
    ),
    "wgan-gp": (
        "Wasserstein critic with gradient penalty 10, 5 critic steps per G step, no norm "
        "in D (Gulrajani et al. 2017)",
        _conv(
            loss={"objective": "wgan", "gp": {"weight": 10.0}},
            optim={"lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9},
            train={"d_steps": 5, "iters": 2000},
        ),
    ),
    "hinge-sn": (
        "hinge loss with spectral normalisation on every D layer (Miyato et al. 2018), "
        "no other norm in D",
        _HINGE_SN,
    ),
    "selfcond": (
        "unconditional: the hinge-sn recipe with 10 categories learnt without labels, a "
        "discriminator that judges each image as the category it guesses and clusters the "
        "real images into them, 25,000 iterations: the best unconditional digits here",
        _conv(
            _HINGE_SN,
            model={"categories": 10, "self_condition": True},
            loss={"cluster_weight": 1.0},
            train={"iters": 25000},
            log={"sample_every": 1000, "ckpt_every": 2500},
        ),
    ),
    "clusters": (
        "unconditional: cdcgan's recipe with 100 clusters of the training images (balanced "
        "spectral clustering of the deskewed images, found before training, no labels used) in "
        "place of the labels, 20,000 iterations: G draws a cluster from its noise, D judges real "
        "images by their cluster. The best unconditional digits here",
        _CLUSTERS,
    ),
    "fashion": (
        "cdcgan's networks and loss, at a constant learning rate of 2e-4 for 20,000 iterations, "
        "on Fashion-MNIST (Debian's dataset-fashion-mnist, else the verified download): "
        "clothing in 10 classes, named on the page",
        _conv(_CONDITIONAL, data={"dataset": "fashion-mnist"}),
    ),
    "stacked": (
        "the clusters recipe on Stacked MNIST (stacked-mnist20k: three digits as red, green and "
        "blue, 1,000 modes), its categories a code in 3 parts, each the cluster of one "
        "channel's picture among 10, G 64 channels wide and D 48, 20,000 iterations: the "
        "mode-collapse benchmark; digitgan evaluate counts the modes",
        _conv(
            _CLUSTERS,
            data={"dataset": "stacked-mnist20k"},
            model={
                "categories": 1000,
                "code_parts": 3,
                "z_dim": 130,
                "dcgan": {"g_channels": 64, "d_channels": 48},
            },
        ),
    ),
}


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""What a config's ``preset`` may hold: the name of one, known or not (see :func:`validate`)."""


def preset(name: str) -> Config:
    """The configuration of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    cfg = Config(preset=name)
    apply_dict(cfg, PRESETS[name][1], f"preset {name}")
    validate(cfg)
    return cfg


# --- reading values -------------------------------------------------------------------------


def _fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _field_type(section_obj, name: str):
    return typing.get_type_hints(type(section_obj))[name]


RENAMED = {
    "model.g_hidden": "model.mlp.g_hidden",
    "model.d_hidden": "model.mlp.d_hidden",
    "model.g_channels": "model.dcgan.g_channels",
    "model.d_channels": "model.dcgan.d_channels",
    "model.d_norm": "model.dcgan.d_norm",
    "loss.gp_weight": "loss.gp.weight",
    "loss.r1_gamma": "loss.r1.gamma",
}
"""Keys of earlier versions -> where they live now; configs and checkpoints that use the old
keys are read with them moved (and written with the new ones)."""


def _coerce(value: Any, tp, where: str) -> Any:
    """Convert a parsed TOML/CLI value to the declared type, or raise naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (list, types.GenericAlias) or tp is list or origin is list:
        (item_tp,) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp}")


def _parse_scalar(text: str) -> Any:
    """A command-line value: TOML syntax when it parses (1e-3, true, [64, 128]), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _target(cfg: Config, dotted: str, source: str):
    """(the section or option table holding ``dotted``, field name) for a key such as
    ``train.iters`` or ``model.mlp.g_hidden``; a ConfigError that lists what exists if none."""
    if dotted == "preset":
        raise ConfigError(f"{source}: 'preset' is chosen with --preset, not set as a value")
    parts = RENAMED.get(dotted, dotted).split(".")
    if len(parts) not in (2, 3) or parts[0] not in SECTIONS:
        raise ConfigError(
            f"{source}: unknown config key {dotted!r}; keys look like section.key with section "
            f"one of {', '.join(SECTIONS)}"
        )
    owner = getattr(cfg, parts[0])
    if len(parts) == 3:
        if not isinstance(owner, _Parts):
            raise ConfigError(f"{source}: unknown config key {dotted!r}; {parts[0]} has no tables")
        owner = owner.part(parts[1])
    if parts[-1] not in _fields(owner):
        where = ".".join(parts[:-1])
        raise ConfigError(
            f"{source}: unknown config key {dotted!r}; {where} has {', '.join(_fields(owner))}"
        )
    return owner, parts[-1]


def set_value(cfg: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set ``section.key`` (or ``section.table.key``) on ``cfg`` from a raw value (strings
    given with --set are parsed as TOML values)."""
    owner, name = _target(cfg, dotted, source)
    if isinstance(value, str) and source == "--set":
        value = _parse_scalar(value)
    key = RENAMED.get(dotted, dotted)
    setattr(owner, name, _coerce(value, _field_type(owner, name), key))
    _check_field(owner, name, key)  # now: a later setting must not hide a bad value


def apply_dict(cfg: Config, d: dict[str, Any], source: str) -> None:
    """Apply a nested ``{section: {key: value, table: {key: value}}}`` dict (or dotted keys)
    onto ``cfg``."""
    for key, value in d.items():
        if key == "preset":
            if not isinstance(value, str):
                raise ConfigError(f"{source}: preset must be a string, got {value!r}")
            cfg.preset = value
        elif isinstance(value, dict):
            if key.split(".")[0] not in SECTIONS:
                raise ConfigError(
                    f"{source}: unknown section [{key}]; sections are {', '.join(SECTIONS)}"
                )
            apply_dict(cfg, {f"{key}.{sub}": v for sub, v in value.items()}, source)
        else:
            set_value(cfg, key, value, source)


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file read: 1 MiB (a complete config is about 2 KB)."""


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (UTF-8, at most MAX_CONFIG_BYTES), with errors that name it."""
    p = Path(path)
    text = read_text_bounded(p, MAX_CONFIG_BYTES, "config file", ConfigError)
    try:
        return tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, and an integer of too many digits
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None


def apply_sets(cfg: Config, sets: list[str] | tuple[str, ...]) -> None:
    """Apply ``--set section.key=value`` strings (values in TOML syntax) onto ``cfg``."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value.strip())


def build_config(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Resolve preset -> TOML file -> ``--set key=value`` -> explicit overrides, then validate.

    The preset is ``preset_name``, else the file's ``preset`` key, else ``seed``.
    """
    file_dict = load_toml(config_file) if config_file else {}
    name = preset_name or file_dict.get("preset", "seed")
    if not isinstance(name, str):
        raise ConfigError(f"{config_file}: preset must be a string, got {name!r}")
    cfg = preset(name)
    apply_dict(cfg, {k: v for k, v in file_dict.items() if k != "preset"}, str(config_file))
    apply_sets(cfg, sets)
    for key, value in (overrides or {}).items():
        set_value(cfg, key, value, source=f"--{key.split('.')[-1].replace('_', '-')}")
    validate(cfg)
    return cfg


# --- validation -----------------------------------------------------------------------------


def _tables(cfg: Config, every: bool = False):
    """(key prefix, section or option table) for every place a field of ``cfg`` lives; with
    ``every``, the tables of every registered entry (not only those in use)."""
    for sname in SECTIONS:
        section = getattr(cfg, sname)
        yield sname, section
        if isinstance(section, _Parts):
            registry = type(section).PARTS[0]
            names = [e.name for e in registry.entries() if e.options] if every else None
            for name in names or section.part_names():
                yield f"{sname}.{name}", section.part(name)


def validate(cfg: Config) -> None:
    """Check every field against its type and constraints; raise ConfigError naming it."""
    # the name of the preset the config was made from: a resolved config holds every value, so
    # one made from a preset since renamed or removed (a checkpoint's) is valid as it is
    if not (isinstance(cfg.preset, str) and PRESET_NAME.fullmatch(cfg.preset)):
        raise ConfigError(
            f"preset: {cfg.preset!r} is not a preset name (up to 64 letters, digits, '-', '_')"
        )
    for prefix, table in _tables(cfg):
        for name in _fields(table):
            _check_field(table, name, f"{prefix}.{name}")
    _check_combinations(cfg)
    if not _device_name(cfg.train.device):
        raise ConfigError(f"train.device: {cfg.train.device!r} is not one of {DEVICES}")


def _check_field(table, name: str, where: str) -> None:
    """Check one field against its type and constraints; raise ConfigError naming it."""
    f = _fields(table)[name]
    value = _coerce(getattr(table, name), _field_type(table, name), where)
    items = value if isinstance(value, list) else [value]
    meta = f.metadata
    if isinstance(value, list) and not value and f.default_factory():
        raise ConfigError(f"{where}: must not be empty")  # a list that is empty by default may be
    choices = _choices(f)
    for v in items:
        if choices is not None and v not in choices:
            raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, choices))}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}: {v!r} is not a finite number")
        if isinstance(v, int) and abs(v) > MAX_INT:
            raise ConfigError(f"{where}: {v!r} is too large (the limit is {MAX_INT})")
        if meta.get("min") is not None and v < meta["min"]:
            raise ConfigError(f"{where}: {v!r} is below the minimum {meta['min']}")
        if meta.get("max") is not None and v > meta["max"]:
            raise ConfigError(f"{where}: {v!r} is above the maximum {meta['max']}")


def _choices(f: dataclasses.Field) -> tuple | None:
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


def _check_combinations(cfg: Config) -> None:
    """Options that are valid alone but not together."""
    loss = cfg.loss
    if loss.label_smoothing and not OBJECTIVES[loss.objective].real_target:
        with_target = [name for name, o in OBJECTIVES.items() if o.real_target]
        raise ConfigError(
            f"loss.label_smoothing: applies to the {', '.join(with_target)} objectives, "
            f"not {loss.objective}"
        )
    mode = cfg.augment.mode
    if mode in AUGMENTS and AUGMENTS[mode].reads_sign and not OBJECTIVES[loss.objective].signed:
        signed = [name for name, o in OBJECTIVES.items() if o.signed]
        raise ConfigError(
            f"augment.mode: {mode} reads D's overfitting from the sign of its logits, which "
            f"only the {', '.join(signed)} objectives give a meaning, not {loss.objective}"
        )
    k = cfg.model.categories
    if k and cfg.model.conditional:  # categories are then clusters within the classes
        if not cfg.model.clusters:
            raise ConfigError(
                "model.categories: a conditional model takes categories only as clusters "
                "within its classes (model.clusters = true)"
            )
        if cfg.model.cond_d != "projection":
            raise ConfigError(
                f"model.cond_d: {cfg.model.cond_d} cannot judge clusters within classes; use "
                "projection"
            )
    if loss.cluster_weight and not k:
        raise ConfigError("loss.cluster_weight: needs model.categories (2 or more)")
    if loss.cluster_views and not loss.cluster_weight:
        raise ConfigError("loss.cluster_views: needs loss.cluster_weight above 0")
    for key in ("self_condition", "clusters"):
        if getattr(cfg.model, key) and not k:
            raise ConfigError(f"model.{key}: needs model.categories (2 or more)")
    if cfg.model.clusters and cfg.model.self_condition:
        raise ConfigError(
            "model.clusters: D judges real images as their clusters, model.self_condition as "
            "its own guesses; choose one"
        )
    if cfg.model.clusters and loss.cluster_weight:
        raise ConfigError(
            "loss.cluster_weight: clusters the real images by D's guesses, which "
            "model.clusters fixes before training; use one"
        )
    parts = cfg.model.code_parts
    base = part_size(k, parts)  # each part's categories (0 without categories)
    if parts > 1:
        if not (cfg.model.clusters and not cfg.model.conditional):
            raise ConfigError(
                "model.code_parts: a code in parts is read from the clusters of the image "
                "channels: it needs model.clusters and an unconditional model"
            )
        if base**parts != k or base < 2:
            raise ConfigError(
                f"model.code_parts: {parts} parts need model.categories = k^{parts} for a "
                f"whole k of 2 or more (as 1000 = 10^3), not {k}"
            )
    entries = parts * base
    if k == 1 or entries >= cfg.model.z_dim:
        raise ConfigError(
            f"model.categories: {k} categories need 2 or more, and their code's {entries} "
            f"entries fewer than model.z_dim ({cfg.model.z_dim}), whose last entries choose them"
        )
    penalties = loss.penalties()
    if cfg.train.compile and penalties:
        keys = ", ".join(f"loss.{name}" for name, _ in penalties)
        raise ConfigError(
            "train.compile: torch.compile cannot differentiate twice, which the gradient "
            f"penalties ({keys}) need; use train.compile=false"
        )


def describe() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every field, with the option tables of every registered
    architecture and penalty: the one source of ``digitgan config --explain`` and of the
    configuration reference. A field with named choices lists them after its help."""
    rows = []
    for prefix, table in _tables(Config(), every=True):
        for name, f in _fields(table).items():
            tp = _field_type(table, name)
            text = f.metadata["help"]
            if (choices := _choices(f)) is not None:
                text += f" (one of: {', '.join(map(str, choices))})"
            rows.append(
                (f"{prefix}.{name}", getattr(tp, "__name__", str(tp)), getattr(table, name), text)
            )
    return rows


DEVICES = "auto, cpu, cuda, cuda:N"
"""The device names digitgan takes."""


def _device_name(name: str) -> bool:
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a cuda request without a GPU, or a name that
    is not one of :data:`DEVICES`, is an error."""
    if not _device_name(name):
        raise ConfigError(f"--device {name}: not one of {DEVICES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use cpu")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices"
        )
    return device
