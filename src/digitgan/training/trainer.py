"""What one run trains and everything a checkpoint must hold to continue it exactly.

A :class:`Trainer` holds the models, their optimisers, the EMA of the generator, the
strength of augmentation (``augment.mode``), the data order and the random streams, and
turns them into checkpoint state and back
(:meth:`Trainer.state`, :meth:`Trainer.load_state`). It computes nothing itself: the
iteration is :mod:`.step`, the loop around it :mod:`.loop`.

Randomness is drawn only from the trainer's own ``torch.Generator`` objects (one for the
data order, one for the noise), all seeded from ``train.seed`` (and the rank, for the noise
of distributed training: see distributed.py); model init draws from the global generator
inside a forked, seeded RNG scope, so training neither reads nor disturbs the caller's
global random state.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from ..augment import AUGMENTS, FixedStrength
from ..config import Config
from ..data import Dataset
from ..data.clusters import channel_clusters, image_clusters
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..fileio import memory_limit
from ..losses import PENALTIES
from ..models import build_models, footprint, has_batch_stats, sample_noise
from ..models.base import part_size
from ..store.checkpoint import (
    load_module_state,
    load_optimizer,
    optimizer_tensors,
    split_prefix,
)
from ..version import __version__
from .batches import EpochBatches
from .distributed import SINGLE, Dist
from .ema import EMA

# Offsets that give each random stream its own seed derived from train.seed.
_DATA_STREAM, _NOISE_STREAM, _FIXED_STREAM, _CLUSTER_STREAM = 1, 2, 3, 4


def _stream(device: torch.device, seed: int, stream: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + stream)


def noise_stream(
    device: torch.device, seed: int, rank: int = 0, reseeded_at: int | None = None
) -> torch.Generator:
    """The noise generator of process ``rank``: rank 0's is the one-process run's; a resume
    with another number of processes reseeds every rank's at iteration ``reseeded_at``."""
    if rank == 0 and reseeded_at is None:
        return _stream(device, seed, _NOISE_STREAM)
    digest = hashlib.sha256(f"noise {seed} {rank} {reseeded_at}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little"))


def fixed_noise_stream(seed: int) -> torch.Generator:
    """The generator of a run's fixed sample-grid noise (on the CPU, the same on any device)."""
    return _stream(torch.device("cpu"), seed, _FIXED_STREAM)


def _noise_key(rank: int, world: int) -> str:
    """The checkpoint tensor holding rank ``rank``'s noise-generator state."""
    return "rng.noise" if world == 1 else f"rng.noise.rank{rank}"


DIVERGED = 1e6
"""The magnitude of a loss or weight past which training has diverged though the numbers are
still finite: healthy runs of these models keep losses within about 100 and weights within
about 10 (a learning rate of 1e6 reaches weights of 3e7 and losses of 2e17 in a few steps)."""


def memory_of(device: torch.device) -> int | None:
    """The memory a run on ``device`` can have at most, in bytes (None if unknown): a GPU's
    total memory; on the CPU the machine's RAM, or the process's address-space limit if lower."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return memory_limit()


def training_bytes(params: int, outputs: int) -> int:
    """A rough lower bound of what training takes: float32 weights, gradients, two Adam
    moments and an EMA copy per parameter; each layer output kept for the backward pass, its
    gradient, and the real and fake batches both going through D."""
    return 4 * (5 * params + 4 * outputs)


def check_memory(
    cfg: Config, image_shape, num_classes: int, batch: int, device, runs: int = 1
) -> None:
    """Refuse, before anything is allocated, a model or batch that cannot fit the device
    (``runs`` of them, trained at once)."""
    available = memory_of(device)
    if available is None:
        return
    params, outputs = footprint(cfg.model, image_shape, num_classes, batch)
    # the noise of every D step and the G step of one iteration is drawn at once
    outputs = (outputs or 0) + (cfg.train.d_steps + 1) * batch * cfg.model.z_dim
    need = runs * training_bytes(params, outputs)
    if need <= available:
        return
    where = "this machine has" if device.type == "cpu" else f"{device} has"
    have = f"{where} {available / 2**30:.1f} GiB"
    times, fewer = (f" {runs} times at once", " or fewer seeds") if runs > 1 else ("", "")
    if runs * training_bytes(params, 0) <= available:  # the model fits; its batch does not
        raise ConfigError(
            f"data.batch_size: a batch of {batch:,} images needs about {need / 2**30:,.1f} GiB "
            f"to train this model{times}, {have}; use a smaller batch{fewer}"
        )
    raise ConfigError(
        f"model: G and D have {params:,} parameters, which need about {need / 2**30:,.1f} GiB "
        f"to train{times}, {have}; use a smaller model{fewer}"
    )


class Trainer:
    """Models, optimisers, data order and noise streams of one run.

    With ``dist`` (a :class:`~.distributed.Dist` of several processes) this is one rank of a
    distributed run: it trains on its part of every batch (``data.batch_size`` is the global
    batch) with its own noise, through DistributedDataParallel wrappers (``G_train``,
    ``D_train``) that average the gradients, so every rank holds the same weights.
    """

    runs = 1
    """How many independent runs one step trains: several for a
    :class:`~.seeds.StackedTrainer`, whose tensors hold every run's rows, run after run."""

    def __init__(
        self,
        cfg: Config,
        dataset: Dataset,
        device: torch.device | str = "cpu",
        dist: Dist = SINGLE,
        clusters: torch.Tensor | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dist = dist
        if cfg.train.precision == "tf32" and self.device.type != "cuda":
            raise ConfigError(
                f"train.precision: tf32 needs a CUDA device (NVIDIA tensor cores), not "
                f"{self.device}; use fp32, or bf16 on a CPU with bf16 units"
            )
        if cfg.data.batch_size % dist.world:
            raise ConfigError(
                f"data.batch_size: {cfg.data.batch_size} images do not divide among "
                f"{dist.world} processes (the batch size is the global batch, split evenly); "
                f"use a multiple of {dist.world}"
            )
        self.batch_size = cfg.data.batch_size // dist.world
        """This process's part of each batch (the whole batch in one process)."""
        self.image_shape = dataset.image_shape
        self.num_classes = dataset.num_classes
        self.dataset_name = dataset.name
        self.class_names = list(dataset.class_names)
        check_memory(cfg, self.image_shape, self.num_classes, self.batch_size, self.device)
        seed = cfg.train.seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G, self.D = build_models(cfg.model, self.image_shape, self.num_classes)
        self._check_penalties()
        # on the CPU, oneDNN's convolutions run 4-20% faster with channels-last weights
        # (benchmarks/RESULTS.md); checkpoints hold ordinary contiguous tensors either way
        layout = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self.G.to(self.device, memory_format=layout)
        self.D.to(self.device, memory_format=layout)
        self.conditional = self.G.num_classes > 0
        o = cfg.optim
        # the fused kernel updates each parameter in one pass instead of one per operation;
        # on CUDA its step counts stay on the device, so a CUDA graph can hold it (.graph)
        adam = {
            "betas": (o.beta1, o.beta2),
            "eps": o.eps,
            "fused": self.device.type in ("cpu", "cuda"),
            "capturable": self.device.type == "cuda",
        }
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, **adam)
        self.ema = EMA(self.G, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.augment = self._augment_strength()
        if cfg.train.compile:  # in place: the state_dict keys, so checkpoints, are unchanged
            self.G.compile()
            self.D.compile()
        labels = torch.from_numpy(dataset.train.labels)
        if cfg.model.clusters:
            labels = self._find_clusters(dataset) if clusters is None else clusters
        self.batches = EpochBatches(
            torch.from_numpy(dataset.train.images).to(self.device),
            labels.to(self.device),
            cfg.data.batch_size,
            _stream(self.device, seed, _DATA_STREAM),
            self.G.out_range,
            shard=(dist.rank, dist.world),
        )
        self.noise_gen = noise_stream(self.device, seed, dist.rank)
        self.reseeded_from: int | None = None
        """The number of processes a resumed checkpoint was saved by, when not this run's."""
        self._noise_states: tuple[int, list[torch.Tensor]] | None = None
        self.step_count = 0
        # G and D as the step calls them: their DistributedDataParallel wrappers across
        # processes, themselves in one
        self.G_train, self.D_train = dist.wrap(self.G), dist.wrap(self.D)

    def _augment_strength(self) -> FixedStrength | None:
        """The strength of ``augment.mode`` (None when it is off): its state is run state."""
        a = self.cfg.augment
        if a.mode not in AUGMENTS:
            return None
        images = self.cfg.data.batch_size * self.cfg.train.d_steps
        return AUGMENTS[a.mode](a.part(a.mode), images, self.device)

    def _check_penalties(self) -> None:
        for name, _ in self.cfg.loss.penalties():
            if PENALTIES[name].per_sample and has_batch_stats(self.D):
                raise ConfigError(
                    f"loss.{name}: the penalty is per sample, but this discriminator has batch "
                    "statistics (BatchNorm), which mix samples; use one without (for dcgan, "
                    "model.dcgan.d_norm=none or layer)"
                )

    @property
    def sample_generator(self) -> torch.nn.Module:
        """The generator that draws samples and is evaluated: the EMA one when enabled."""
        return self.ema.model if self.ema else self.G

    def noise(
        self, n: int, generator: torch.Generator | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` noise vectors on the training device, from the run's noise stream by default;
        written into ``out`` when given."""
        gen = generator or self.noise_gen
        m = self.cfg.model
        if out is not None and out.device == gen.device:
            return sample_noise(n, m.z_dim, m.noise, gen, out=out)
        z = sample_noise(n, m.z_dim, m.noise, gen, gen.device).to(self.device)
        return z if out is None else out.copy_(z)

    def rand(self, shape: tuple[int, ...], normal: bool = False) -> torch.Tensor:
        """Uniform numbers in [0, 1) (standard normal ones with ``normal``) of ``shape`` from
        the run's noise stream, on the training device: the randomness of perturbations and
        penalties."""
        draw = torch.randn if normal else torch.rand
        return draw(shape, generator=self.noise_gen, device=self.device)

    def fake_labels(self, n: int) -> torch.Tensor | None:
        """Uniformly drawn class labels for generated images (None for unconditional models)."""
        if not self.conditional:
            return None
        return torch.randint(
            0, self.G.num_classes, (n,), generator=self.noise_gen, device=self.device
        )

    def check_weights(self) -> None:
        """Raise DivergenceError if a weight of G or D is NaN, infinite or beyond
        :data:`DIVERGED` in magnitude (one host sync)."""
        for name, module in (("generator", self.G), ("discriminator", self.D)):
            params = [p.detach() for p in module.parameters() if p.is_floating_point()]
            params = [p for p in params if p.numel()]
            if not params:
                continue
            largest = torch.stack(torch._foreach_norm(params, float("inf"))).max()
            if not bool(largest <= DIVERGED):  # (NaN compares false)
                raise DivergenceError(
                    f"training diverged: the {name}'s weights are NaN or infinite, or beyond "
                    f"{DIVERGED:g} in magnitude, after iteration {self.step_count}"
                )

    # --- checkpoint state -----------------------------------------------------------------

    def gather_noise_states(self) -> None:
        """Across processes, collect every rank's noise-generator state for :meth:`state`
        (a collective: every rank calls it at the same step). Nothing to do in one process."""
        if self.dist.world > 1:
            self._noise_states = (self.step_count, self.dist.gather(self.noise_gen.get_state()))

    def _find_clusters(self, dataset: Dataset) -> torch.Tensor:
        """The training images' clusters (model.clusters), found on rank 0 from the run's seed
        and shared, so that every rank has the same."""
        cpu, m, images = torch.device("cpu"), self.cfg.model, dataset.train.images
        if m.code_parts > 1 and m.code_parts != images.shape[1]:
            raise ConfigError(
                f"model.code_parts: {m.code_parts} parts are the clusters of as many image "
                f"channels; {dataset.name} has {images.shape[1]}"
            )

        def find() -> torch.Tensor:
            gen = _stream(cpu, self.cfg.train.seed, _CLUSTER_STREAM)
            if m.code_parts > 1:  # a part per channel
                return channel_clusters(images, part_size(m.categories, m.code_parts), gen)
            labels = dataset.train.labels if self.conditional else None
            return image_clusters(images, m.categories, gen, labels)

        found = self.dist.on_main(lambda: find().numpy().tobytes())
        return torch.frombuffer(bytearray(self.dist.broadcast_bytes(found)), dtype=torch.long)

    def _load_clusters(self, clusters: torch.Tensor) -> None:
        """The training images' clusters (model.clusters) from a checkpoint, checked."""
        n, k = len(self.batches.images), self.D.num_classes  # categories (of each class)
        if clusters.shape != (n,) or clusters.is_floating_point():
            raise ValueError(f"data.clusters must hold {n} integers, one per training image")
        if n and not 0 <= int(clusters.min()) <= int(clusters.max()) < k:
            raise ValueError(f"data.clusters must lie in 0..{k - 1}")
        self.batches.labels = clusters.to(self.device, torch.long)

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, metadata) that restore this trainer exactly. Across processes, the noise
        states are those :meth:`gather_noise_states` collected at this step (on any rank)."""
        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors |= {f"D.{k}": v for k, v in self.D.state_dict().items()}
        if self.ema:
            tensors |= {f"G_ema.{k}": v for k, v in self.ema.model.state_dict().items()}
        tg, mg = optimizer_tensors(self.opt_g, "opt_g")
        td, md = optimizer_tensors(self.opt_d, "opt_d")
        b = self.batches.state_dict()
        world = self.dist.world
        noise = [self.noise_gen.get_state()]
        if world > 1:
            step, noise = self._noise_states or (None, [])
            if step != self.step_count:
                raise RuntimeError("Trainer.state: call gather_noise_states() on every rank")
        tensors |= tg | td | {"rng.data": b["rng"], "data.perm": b["perm"]}
        if self.cfg.model.clusters:  # kept: a resume goes on with the very same clusters
            tensors["data.clusters"] = self.batches.labels
        if self.augment:
            tensors |= {f"augment.{k}": v for k, v in self.augment.state().items()}
        tensors |= {_noise_key(rank, world): state for rank, state in enumerate(noise)}
        meta = {
            "step": self.step_count,
            "config": self.cfg.to_dict(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "dataset": self.dataset_name,
            "out_range": list(self.G.out_range),
            "data_pos": b["pos"],
            "world_size": world,
            "opt_g": mg,
            "opt_d": md,
            "digitgan_version": __version__,
            "torch_version": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict, source: Path) -> None:
        """Restore from :meth:`state` output (checked against this trainer's models)."""
        if list(meta.get("image_shape", [])) != list(self.image_shape):
            raise CheckpointError(
                f"{source}: trained on images of shape {meta.get('image_shape')}, the dataset "
                f"has {list(self.image_shape)}"
            )
        load_module_state(self.G, tensors, "G", source)
        load_module_state(self.D, tensors, "D", source)
        if self.ema:
            load_module_state(self.ema.model, tensors, "G_ema", source)
        missing = [k for k in ("opt_g", "opt_d", "data_pos") if k not in meta]
        if missing:
            raise CheckpointError(
                f"{source}: holds no training state ({', '.join(missing)} missing), so training "
                "cannot continue from it"
            )
        load_optimizer(self.opt_g, tensors, meta["opt_g"], "opt_g", source)
        load_optimizer(self.opt_d, tensors, meta["opt_d"], "opt_d", source)
        try:
            self.batches.load_state_dict(
                {"perm": tensors["data.perm"], "pos": meta["data_pos"], "rng": tensors["rng.data"]}
            )
            self._load_noise_state(tensors, meta)
            if self.cfg.model.clusters:
                self._load_clusters(tensors["data.clusters"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{source}: random or data-order state unusable: {e}") from None
        if self.augment:
            try:
                self.augment.load_state(split_prefix(tensors, "augment"))
            except ValueError as e:
                raise CheckpointError(f"{source}: augmentation state unusable: {e}") from None
        self.step_count = int(meta["step"])

    def _load_noise_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """This rank's noise state; when the checkpoint was saved by another number of
        processes, every rank's noise stream is reseeded from the seed, rank and step."""
        saved = meta.get("world_size", 1)  # checkpoints from before distributed training: 1
        if type(saved) is not int or saved < 1:
            raise ValueError(f"world_size {saved!r} is not a positive integer")
        dist = self.dist
        if saved == dist.world:
            self.noise_gen.set_state(tensors[_noise_key(dist.rank, dist.world)])
            return
        seed, step = self.cfg.train.seed, meta["step"]
        self.noise_gen = noise_stream(self.device, seed, dist.rank, reseeded_at=step)
        self.reseeded_from = saved
