"""Typed configuration: every option, its default, its documentation and its checks.

A :class:`Config` has one section per concern (``data``, ``model``, ``loss``,
``optim``, ``train``, ``log``). Each field is declared once, with its help text
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
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ConfigError


def opt(default, help: str, *, choices=None, min=None, max=None):
    """A documented config field: its default, help text and constraints.

    ``choices`` is a tuple or a function returning one (for registries filled elsewhere).
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _model_names() -> tuple[str, ...]:
    from .models import MODELS

    return tuple(MODELS)


def _init_names() -> tuple[str, ...]:
    from .models import INITS

    return tuple(INITS)


def _objective_names() -> tuple[str, ...]:
    from .losses import OBJECTIVES

    return tuple(OBJECTIVES)


@dataclass
class DataConfig:
    dataset: str = opt(
        "mnist20k", "dataset spec: a registered name (digitgan data list), idx:DIR or npz:FILE"
    )
    data_dir: str = opt("", "where downloaded datasets are cached ('' = $DIGITGAN_DATA or cache)")
    batch_size: int = opt(
        128, "images per discriminator batch (and noise vectors per G step)", min=1
    )


@dataclass
class ModelConfig:
    arch: str = opt(
        "mlp", "generator/discriminator architecture (mlp, dcgan)", choices=_model_names
    )
    z_dim: int = opt(100, "dimension of the noise vector z", min=1)
    noise: str = opt(
        "uniform",
        "noise distribution: uniform(-1, 1) or normal(0, 1)",
        choices=("uniform", "normal"),
    )
    g_hidden: list[int] = opt([128], "mlp: widths of the generator's hidden dense layers", min=1)
    d_hidden: list[int] = opt([128], "mlp: widths of the discriminator's hidden layers", min=1)
    g_channels: int = opt(64, "dcgan: generator base channels (2g, then g)", min=1)
    d_channels: int = opt(64, "dcgan: discriminator base channels (d, then 2d)", min=1)
    d_norm: str = opt(
        "none",
        "dcgan: discriminator normalisation (none for WGAN-GP and R1)",
        choices=("none", "batch", "layer"),
    )
    spectral_norm: bool = opt(False, "spectral normalisation on every discriminator layer")
    conditional: bool = opt(False, "class-conditional G and D (labels from the dataset)")
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
        choices=_init_names,
    )


@dataclass
class LossConfig:
    objective: str = opt(
        "ns",
        "adversarial objective: ns (non-saturating), minimax, lsgan (least squares), "
        "wgan (Wasserstein), hinge",
        choices=_objective_names,
    )
    label_smoothing: float = opt(
        0.0, "one-sided label smoothing: real target 1 - s (ns, minimax, lsgan)", min=0.0, max=0.5
    )
    gp_weight: float = opt(0.0, "gradient penalty weight (WGAN-GP uses 10; 0 = off)", min=0.0)
    r1_gamma: float = opt(0.0, "R1 penalty gamma on real data (0 = off)", min=0.0)
    instance_noise: float = opt(
        0.0,
        "std of Gaussian noise added to D's inputs, annealed linearly to 0 (0 = off)",
        min=0.0,
    )


@dataclass
class OptimConfig:
    lr_g: float = opt(1e-3, "generator Adam learning rate", min=0.0)
    lr_d: float = opt(1e-3, "discriminator Adam learning rate", min=0.0)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = opt(0.999, "Adam beta2", min=0.0, max=1.0)
    eps: float = opt(1e-8, "Adam epsilon", min=0.0)


@dataclass
class TrainConfig:
    iters: int = opt(
        10_000, "total training iterations (one iteration = D step(s) + G step)", min=0
    )
    d_steps: int = opt(1, "discriminator steps per generator step", min=1)
    fast_step: bool = opt(
        True,
        "use the hand-written step for unconditional MLP models without penalties (the same "
        "math as autograd with less overhead; one process only, not under torchrun, fp32 "
        "and not compiled); false = the generic autograd step",
    )
    ema_decay: float = opt(
        0.0,
        "exponential moving average of G's weights with this decay, used for samples and "
        "evaluation (0 = off; 0.999 is typical)",
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
        "fp32, or bf16: G and D forward passes under bfloat16 autocast, losses, weights, "
        "optimiser state and checkpoints in float32 (meant for GPUs; runs on a CPU too)",
        choices=("fp32", "bf16"),
    )
    compile: bool = opt(
        False,
        "compile G and D with torch.compile (needs a C compiler; the first iterations are "
        "slow while it compiles; checkpoints are unchanged)",
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


SECTIONS = ("data", "model", "loss", "optim", "train", "log")
MAX_INT = 2**31 - 1
"""No integer option may exceed this (a typo, not a size any tensor or loop could have)."""


@dataclass
class Config:
    """The complete, resolved configuration of a run."""

    preset: str = "seed"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
        "g_channels": 32,
        "d_channels": 32,
    },
    "data": {"batch_size": 64},
    "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999},
    "train": {"iters": 5000, "ema_decay": 0.999},
    "log": {"sample_every": 500, "ckpt_every": 1000},
}


def _conv(**sections: dict[str, Any]) -> dict[str, Any]:
    """The shared convolutional recipe with some sections' fields changed."""
    return {name: {**_CONV.get(name, {}), **sections.get(name, {})} for name in {*_CONV, *sections}}


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": (
        "the seed article's vanilla GAN: 128-unit MLPs, uniform noise, Adam, batch 128, "
        "10,000 iterations",
        {},
    ),
    "dcgan": (
        "convolutional G and D (DCGAN), non-saturating loss, BatchNorm in D, EMA of G: "
        "smooth digits in minutes on a CPU",
        _conv(model={"d_norm": "batch"}),
    ),
    "cdcgan": (
        "class-conditional DCGAN (label embedding in G, projection D with spectral norm, "
        "hinge loss), 20,000 iterations: the best digits here; choose one with --label",
        _conv(
            model={"conditional": True, "spectral_norm": True},
            loss={"objective": "hinge"},
            train={"iters": 20000},
            log={"sample_every": 1000, "ckpt_every": 2000},
        ),
    ),
    "wgan-gp": (
        "Wasserstein critic with gradient penalty 10, 5 critic steps per G step, no norm "
        "in D (Gulrajani et al. 2017)",
        _conv(
            loss={"objective": "wgan", "gp_weight": 10.0},
            optim={"lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9},
            train={"d_steps": 5, "iters": 2000},
        ),
    ),
    "hinge-sn": (
        "hinge loss with spectral normalisation on every D layer (Miyato et al. 2018), "
        "no other norm in D",
        _conv(
            model={"spectral_norm": True},
            loss={"objective": "hinge"},
            optim={"beta1": 0.0, "beta2": 0.999},
        ),
    ),
}


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


def set_value(cfg: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set ``section.key`` on ``cfg`` from a raw value (strings are parsed as TOML values)."""
    parts = dotted.split(".")
    if dotted == "preset":
        raise ConfigError(f"{source}: 'preset' is chosen with --preset, not set as a value")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(
            f"{source}: unknown config key {dotted!r}; keys look like section.key with section "
            f"one of {', '.join(SECTIONS)}"
        )
    section = getattr(cfg, parts[0])
    if parts[1] not in _fields(section):
        raise ConfigError(
            f"{source}: unknown config key {dotted!r}; {parts[0]} has {', '.join(_fields(section))}"
        )
    if isinstance(value, str) and source == "--set":
        value = _parse_scalar(value)
    setattr(section, parts[1], _coerce(value, _field_type(section, parts[1]), f"{dotted}"))


def apply_dict(cfg: Config, d: dict[str, Any], source: str) -> None:
    """Apply a nested ``{section: {key: value}}`` dict (or dotted keys) onto ``cfg``."""
    for key, value in d.items():
        if key == "preset":
            if not isinstance(value, str):
                raise ConfigError(f"{source}: preset must be a string, got {value!r}")
            cfg.preset = value
        elif isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(
                    f"{source}: unknown section [{key}]; sections are {', '.join(SECTIONS)}"
                )
            for sub, v in value.items():
                set_value(cfg, f"{key}.{sub}", v, source)
        else:
            set_value(cfg, key, value, source)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file, with errors that name the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None


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
    cfg = preset(preset_name or file_dict.get("preset", "seed"))
    apply_dict(cfg, {k: v for k, v in file_dict.items() if k != "preset"}, str(config_file))
    apply_sets(cfg, sets)
    for key, value in (overrides or {}).items():
        set_value(cfg, key, value, source=f"--{key.split('.')[-1].replace('_', '-')}")
    validate(cfg)
    return cfg


# --- validation -----------------------------------------------------------------------------


def validate(cfg: Config) -> None:
    """Check every field against its type and constraints; raise ConfigError naming it."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset {cfg.preset!r}; known: {', '.join(PRESETS)}")
    for sname in SECTIONS:
        section = getattr(cfg, sname)
        for name, f in _fields(section).items():
            where = f"{sname}.{name}"
            value = getattr(section, name)
            value = _coerce(value, _field_type(section, name), where)
            items = value if isinstance(value, list) else [value]
            meta = f.metadata
            if isinstance(value, list) and not value:
                raise ConfigError(f"{where}: must not be empty")
            choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
            for v in items:
                if choices is not None and v not in choices:
                    raise ConfigError(
                        f"{where}: {v!r} is not one of {', '.join(map(str, choices))}"
                    )
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{where}: {v!r} is not a finite number")
                if isinstance(v, int) and abs(v) > MAX_INT:
                    raise ConfigError(f"{where}: {v!r} is too large (the limit is {MAX_INT})")
                if meta["min"] is not None and v < meta["min"]:
                    raise ConfigError(f"{where}: {v!r} is below the minimum {meta['min']}")
                if meta["max"] is not None and v > meta["max"]:
                    raise ConfigError(f"{where}: {v!r} is above the maximum {meta['max']}")
    _check_combinations(cfg)
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: {dev!r} is not one of auto, cpu, cuda, cuda:N")


def _check_combinations(cfg: Config) -> None:
    """Options that are valid alone but not together."""
    from .losses import OBJECTIVES

    loss = cfg.loss
    if loss.label_smoothing and not OBJECTIVES[loss.objective].real_target:
        with_target = [name for name, o in OBJECTIVES.items() if o.real_target]
        raise ConfigError(
            f"loss.label_smoothing: applies to the {', '.join(with_target)} objectives, "
            f"not {loss.objective}"
        )
    if (
        (loss.gp_weight or loss.r1_gamma)
        and cfg.model.arch == "dcgan"
        and (cfg.model.d_norm == "batch")
    ):
        raise ConfigError(
            "model.d_norm: batch norm mixes samples, which breaks the per-sample gradient "
            "penalty (loss.gp_weight / loss.r1_gamma); use model.d_norm=none or layer"
        )
    if cfg.train.compile and (loss.gp_weight or loss.r1_gamma):
        raise ConfigError(
            "train.compile: torch.compile cannot differentiate twice, which the gradient "
            "penalties (loss.gp_weight / loss.r1_gamma) need; use train.compile=false"
        )


def describe() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every field: the documentation of all options."""
    rows = []
    cfg = Config()
    for sname in SECTIONS:
        section = getattr(cfg, sname)
        for name, f in _fields(section).items():
            tp = _field_type(section, name)
            tname = getattr(tp, "__name__", str(tp))
            rows.append((f"{sname}.{name}", tname, getattr(section, name), f.metadata["help"]))
    return rows
