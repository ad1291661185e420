"""The training loop: alternating discriminator and generator steps, with its outputs.

:class:`GANTrainer` owns the models, optimisers, random generators and data
order: everything a checkpoint must hold for an exact resume. :func:`train`
and :func:`resume` wrap it with a run directory, logging and Ctrl-C handling.

Randomness is drawn only from the trainer's own ``torch.Generator`` objects
(one for the data order, one for the noise), all seeded from ``train.seed``
(and the rank, for the noise of distributed training: see distributed.py);
model init draws from the global generator inside a forked, seeded RNG scope,
so training neither reads nor disturbs the caller's global random state.
"""

from __future__ import annotations

import functools
import hashlib
import math
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..config import SECTIONS, Config, apply_sets
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..losses import OBJECTIVES, PENALTIES
from ..models import build_models, sample_noise
from ..viz import make_grid, save_png, to_uint8
from . import fast_mlp
from .batches import EpochBatches
from .checkpoint import (
    LATEST,
    SUFFIX,
    check_models,
    checkpoint_config,
    load_module_state,
    load_optimizer,
    optimizer_tensors,
    parse_checkpoint,
    read_checkpoint_bytes,
    read_metadata,
    save_checkpoint,
)
from .distributed import SINGLE, Dist, session
from .ema import EMA
from .logger import RunLogger
from .rundir import RunDir

# Offsets that give each random stream its own seed derived from train.seed.
_DATA_STREAM, _NOISE_STREAM, _FIXED_STREAM = 1, 2, 3


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a cuda request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use cpu")
    return torch.device(name)


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


def _noise_key(rank: int, world: int) -> str:
    """The checkpoint tensor holding rank ``rank``'s noise-generator state."""
    return "rng.noise" if world == 1 else f"rng.noise.rank{rank}"


class GANTrainer:
    """Models, optimisers, data order and noise for one run; ``step()`` is one iteration.

    With ``dist`` (a :class:`~.distributed.Dist` of several processes) this is one rank of a
    distributed run: it trains on its part of every batch (``data.batch_size`` is the global
    batch) with its own noise, through DistributedDataParallel wrappers that average the
    gradients, so every rank holds the same weights.
    """

    def __init__(
        self,
        cfg: Config,
        dataset: Dataset,
        device: torch.device | str = "cpu",
        dist: Dist = SINGLE,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dist = dist
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
        seed = cfg.train.seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G, self.D = build_models(cfg.model, self.image_shape, self.num_classes)
        # on the CPU, oneDNN's convolutions run 4-20% faster with channels-last weights
        # (benchmarks/RESULTS.md); checkpoints hold ordinary contiguous tensors either way
        layout = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self.G.to(self.device, memory_format=layout)
        self.D.to(self.device, memory_format=layout)
        self.conditional = self.G.num_classes > 0
        self.objective = OBJECTIVES[cfg.loss.objective]
        smoothing = cfg.loss.label_smoothing
        self.d_loss_kw = {"real_target": 1.0 - smoothing} if smoothing else {}
        self.penalties = [
            (getattr(cfg.loss, field), fn)
            for field, fn in PENALTIES.items()
            if getattr(cfg.loss, field) > 0
        ]
        o = cfg.optim
        # the fused kernel updates each parameter in one pass instead of one per operation
        fused = self.device.type in ("cpu", "cuda")
        self.opt_g = torch.optim.Adam(
            self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused
        )
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused
        )
        self.ema = EMA(self.G, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.autocast = (
            functools.partial(torch.autocast, self.device.type, torch.bfloat16)
            if cfg.train.precision == "bf16"
            else nullcontext
        )
        """The context of G's and D's forward passes: bfloat16 autocast for train.precision =
        bf16 (weights, gradients, optimiser state and losses stay float32)."""
        self.compile_errors: tuple[type[Exception], ...] = ()
        """What a failing torch.compile raises (at the models' first call), with train.compile."""
        if cfg.train.compile:  # in place: the state_dict keys, so checkpoints, are unchanged
            from torch._dynamo.exc import TorchDynamoException

            self.G.compile()
            self.D.compile()
            self.compile_errors = (TorchDynamoException,)
        self.batches = EpochBatches(
            torch.from_numpy(dataset.train.images).to(self.device),
            torch.from_numpy(dataset.train.labels).to(self.device),
            cfg.data.batch_size,
            _stream(self.device, seed, _DATA_STREAM),
            self.G.out_range,
            shard=(dist.rank, dist.world),
        )
        self.noise_gen = noise_stream(self.device, seed, dist.rank)
        self.reseeded_from: int | None = None
        """The number of processes a resumed checkpoint was saved by, when not this run's."""
        self._noise_states: tuple[int, list[torch.Tensor]] | None = None
        rows = cfg.log.grid_rows
        self.fixed_z = self.noise(rows * rows, _stream(torch.device("cpu"), seed, _FIXED_STREAM))
        # conditional grids: row r draws class r mod num_classes
        self.fixed_labels = (
            (torch.arange(rows * rows, device=self.device) // rows) % self.G.num_classes
            if self.conditional
            else None
        )
        self.step_count = 0
        self.last: dict[str, torch.Tensor] = {}
        # what autograd_step() calls: G and D, or their DistributedDataParallel wrappers; the
        # hand-written step sets .grad itself, past DDP's averaging, so it is one-process only
        self.G_train, self.D_train = dist.wrap(self.G), dist.wrap(self.D)
        fast = fast_mlp.supports(self) and dist.world == 1
        self.fast_step = fast_mlp.FastMLPStep(self) if fast else None

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator used for samples and evaluation: the EMA one when enabled."""
        return self.ema.model if self.ema else self.G

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` noise vectors on the training device, from the run's noise stream by default."""
        gen = generator or self.noise_gen
        m = self.cfg.model
        return sample_noise(n, m.z_dim, m.noise, gen, gen.device).to(self.device)

    def fake_labels(self, n: int) -> torch.Tensor | None:
        """Uniformly drawn class labels for generated images (None for unconditional models)."""
        if not self.conditional:
            return None
        return torch.randint(
            0, self.G.num_classes, (n,), generator=self.noise_gen, device=self.device
        )

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """Instance noise (Sonderby et al. 2016): Gaussian noise on D's inputs, its std
        annealed linearly from ``loss.instance_noise`` to 0 over the run."""
        sigma = self.cfg.loss.instance_noise * max(
            0.0, 1.0 - self.step_count / max(1, self.cfg.train.iters)
        )
        if sigma == 0.0:
            return x
        noise = torch.randn(x.shape, generator=self.noise_gen, device=x.device, dtype=x.dtype)
        return x + sigma * noise

    def step(self) -> None:
        """One iteration: ``d_steps`` discriminator steps on real batches and fresh noise, then
        one generator step on fresh noise. Results stay on the device in ``self.last``."""
        d_loss, g_loss, real_logits, fake_logits = (self.fast_step or self.autograd_step)()
        if self.ema:
            self.ema.update(self.G, self.step_count)
        self.step_count += 1
        self.last = {
            "D_loss": d_loss.detach(),
            "G_loss": g_loss.detach(),
            "real_logits": real_logits.detach(),
            "fake_logits": fake_logits.detach(),
        }

    def autograd_step(self):
        """The generic iteration, through autograd: any model, objective and penalty.
        Returns (d_loss, g_loss, real_logits, fake_logits).

        G and D run under :attr:`autocast`; their outputs are cast to float32 (a no-op in
        fp32), so perturbations, objectives and penalty norms are computed in float32."""
        G, D, obj, amp = self.G_train, self.D_train, self.objective, self.autocast
        bs = self.batch_size
        for _ in range(self.cfg.train.d_steps):
            x, labels = self.batches.next()
            y = labels if self.conditional else None
            fake_y = self.fake_labels(bs)
            with torch.no_grad(), amp():
                fake = G(self.noise(bs), fake_y).float()
            with amp():
                real_logits = D(self.perturb(x), y).float()
                fake_logits = D(self.perturb(fake), fake_y).float()
            d_loss = obj.d_loss(real_logits, fake_logits, **self.d_loss_kw)
            for weight, penalty in self.penalties:
                with amp():  # D's input gradient is float32: its inputs are
                    p = penalty(D, x, fake, y, self.noise_gen)
                d_loss = d_loss + weight * p
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        D.requires_grad_(False)
        fake_y = self.fake_labels(bs)
        with amp():
            g_logits = D(self.perturb(G(self.noise(bs), fake_y).float()), fake_y).float()
        g_loss = obj.g_loss(g_logits)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        D.requires_grad_(True)
        return d_loss, g_loss, real_logits, fake_logits

    def stats(self) -> dict[str, float]:
        """The last step's losses and mean D(x), D(G(z)) as floats (one host sync); across
        processes, their means over the ranks (so, over the global batch)."""
        s = self.last
        t = torch.stack(
            [
                s["D_loss"],
                s["G_loss"],
                torch.sigmoid(s["real_logits"]).mean(),
                torch.sigmoid(s["fake_logits"]).mean(),
            ]
        )
        t = self.dist.mean(t).tolist()
        return dict(zip(("D_loss", "G_loss", "D_real", "D_fake"), t, strict=True))

    @torch.no_grad()
    def sample_grid(self):
        """The fixed-noise sample grid as a uint8 image (rows x rows digits)."""
        G = self.sampler
        was_training = G.training
        G.eval()
        images = G(self.fixed_z, self.fixed_labels)
        G.train(was_training)
        return make_grid(to_uint8(images, G.out_range), nrow=self.cfg.log.grid_rows)

    # --- checkpoint state -----------------------------------------------------------------

    def gather_noise_states(self) -> None:
        """Across processes, collect every rank's noise-generator state for :meth:`state`
        (a collective: every rank calls it at the same step). Nothing to do in one process."""
        if self.dist.world > 1:
            self._noise_states = (self.step_count, self.dist.gather(self.noise_gen.get_state()))

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
                raise RuntimeError("GANTrainer.state: call gather_noise_states() on every rank")
        tensors |= tg | td | {"rng.data": b["rng"], "data.perm": b["perm"]}
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
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{source}: random or data-order state unusable: {e}") from None
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

    def check_finite(self) -> None:
        """Raise DivergenceError if a weight of G or D is NaN or infinite (one host sync)."""
        for name, module in (("generator", self.G), ("discriminator", self.D)):
            params = [p.detach() for p in module.parameters() if p.is_floating_point()]
            if params and not bool(torch.stack([p.isfinite().all() for p in params]).all()):
                raise DivergenceError(
                    f"training diverged: the {name}'s weights are NaN or infinite after "
                    f"iteration {self.step_count}"
                )


# --- runs -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` and :func:`resume` return. ``out_of_time``: training stopped
    before ``train.iters`` because its ``train.max_minutes`` were spent."""

    run_dir: Path
    step: int
    interrupted: bool
    stats: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    out_of_time: bool = False


class _StopFlag:
    """Ctrl-C asks the loop to stop after the current iteration; a second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def _sigint_to(flag: _StopFlag):
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, flag)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _save(trainer: GANTrainer, run: RunDir | None, numbered: bool) -> None:
    """Checkpoint the trainer, unless its weights have diverged (then the last good one stays).
    Across processes every rank calls it, and rank 0 (the one with a ``run``) writes."""
    _check_finite(trainer, run)
    trainer.gather_noise_states()

    def write() -> None:
        tensors, meta = trainer.state()
        try:
            if numbered:
                path = run.checkpoints / f"step-{trainer.step_count:07d}{SUFFIX}"
                save_checkpoint(path, tensors, meta)
            save_checkpoint(run.checkpoints / f"{LATEST}{SUFFIX}", tensors, meta)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; {_where_to_continue(run, 'once that is fixed')}") from e

    trainer.dist.on_main(write)


def _check_finite(
    trainer: GANTrainer,
    run: RunDir | None,
    stats: dict | None = None,
    i: int = 0,
    weights: bool = True,
) -> None:
    """Raise DivergenceError, saying how to go on (given the ``run``), if iteration ``i``'s
    losses in ``stats`` or (with ``weights``) the model weights are NaN or infinite. Across
    processes the stats and weights are the same on every rank, so all ranks raise alike."""
    try:
        bad = [
            f"{k.replace('_', ' ')} {v}"
            for k, v in (stats or {}).items()
            if k.endswith("_loss") and not math.isfinite(v)
        ]
        if bad:
            raise DivergenceError(f"training diverged at iteration {i}: {', '.join(bad)}")
        if weights:
            trainer.check_finite()
    except DivergenceError as e:
        if run is None:
            raise
        raise DivergenceError(f"{e}; {_divergence_advice(trainer, run)}") from None


def _divergence_advice(trainer: GANTrainer, run: RunDir) -> str:
    o = trainer.cfg.optim
    lrs = f" --set optim.lr_d={o.lr_d / 2:g} --set optim.lr_g={o.lr_g / 2:g}"
    return _where_to_continue(run, "to try lower learning rates", lrs)


def _where_to_continue(run: RunDir, then: str, options: str = "") -> str:
    """Which checkpoint the run can continue from, and the command that does it."""
    path = run.checkpoints / f"{LATEST}{SUFFIX}"
    try:
        step = read_metadata(path)["step"]
    except CheckpointError:
        return f"no checkpoint was saved yet; {then}, start again with --force{options}"
    return (
        f"the last good checkpoint ({path}, iteration {step}) is kept; {then}, continue with "
        f"`digitgan train --resume {run.root}{options}`"
    )


def _console(progress: bool):
    """(bar factory, write function): tqdm when ``progress``, else plain prints."""
    if progress:
        from tqdm import tqdm

        return tqdm, tqdm.write
    return None, lambda s: print(s, flush=True)


def _evaluator(cfg: Config, dataset: Dataset):
    """The ``log.eval_every`` hook (checks its classifier and test split now), or None."""
    if not cfg.log.eval_every:
        return None
    from ..eval.evaluate import TrainingEval

    return TrainingEval(cfg, dataset)


class _Quiet:
    """Stands in for the logger on ranks other than 0: every method does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def _fit(
    trainer: GANTrainer,
    run: RunDir | None,
    iters: int,
    progress: bool,
    fresh: bool,
    evaluator=None,
) -> TrainResult:
    """Train to ``iters`` with every output. Across processes every rank runs this loop;
    rank 0 alone has the ``run`` (and the ``evaluator``) and writes files, prints and shows
    the progress bar."""
    cfg, dist = trainer.cfg.log, trainer.dist
    root = Path(dist.broadcast_bytes(str(run.root).encode() if run else None).decode())
    logger, bar_cls, write = _Quiet(), None, lambda s: None
    if run is not None:
        logger = RunLogger(run, purge_step=None if fresh else trainer.step_count)
        bar_cls, write = _console(progress)
    if fresh:
        logger.graph(trainer)
    if trainer.reseeded_from:
        n = trainer.reseeded_from
        write(
            f"Note: continuing a run of {n} process{'es' if n > 1 else ''} with {dist.world}: "
            "the data order continues exactly, the noise streams are reseeded"
        )
    bar = (
        bar_cls(
            total=iters, initial=trainer.step_count, unit="it", dynamic_ncols=True, file=sys.stderr
        )
        if bar_cls
        else None
    )
    stop = _StopFlag()
    t0, step0 = time.perf_counter(), trainer.step_count
    budget = trainer.cfg.train.max_minutes * 60
    stats: dict[str, float] = {}
    interrupted = out_of_time = False

    def grid(index_step: int, final: bool = False) -> None:
        """The sample grid of iteration ``index_step`` (numbered by log.sample_every)."""
        if run is None:
            return
        path = run.samples / "final.png" if final else run.grid_path(index_step // cfg.sample_every)
        image = trainer.sample_grid()
        save_png(path, image)
        logger.image(index_step, image)

    try:
        with _sigint_to(stop):
            while trainer.step_count < iters:
                if dist.stop_now(stop.requested, trainer.step_count):
                    interrupted = True
                    break
                if budget and dist.stop_now(time.perf_counter() - t0 >= budget, trainer.step_count):
                    out_of_time = True
                    break
                i = trainer.step_count  # the seed's 0-based iteration number
                if cfg.sample_every and i % cfg.sample_every == 0:
                    grid(i)
                trainer.step()
                log_now = cfg.tb_every and i % cfg.tb_every == 0
                print_now = cfg.print_every and i % cfg.print_every == 0
                if log_now or print_now:
                    stats = trainer.stats()
                    # (histograms of NaN weights would fail; their check costs no extra sync)
                    _check_finite(trainer, run, stats, i, weights=log_now and cfg.histograms)
                    elapsed = time.perf_counter() - t0
                    rate = (trainer.step_count - step0) / max(elapsed, 1e-9)
                    if log_now:
                        logger.scalars(i, stats, rate)
                        if cfg.histograms:
                            logger.histograms(i, trainer.G, trainer.D)
                    if print_now:
                        write(
                            f"Iter: {i}  D loss: {stats['D_loss']:.4}  G loss: {stats['G_loss']:.4}"
                        )
                    if bar:
                        bar.set_postfix(
                            D=f"{stats['D_loss']:.3f}", G=f"{stats['G_loss']:.3f}", refresh=False
                        )
                if bar:
                    bar.update(1)
                if cfg.eval_every and trainer.step_count % cfg.eval_every == 0:
                    trainer.gather_noise_states()  # for a best checkpoint
                    dist.on_main(lambda: evaluator(trainer, run, logger))
                if cfg.ckpt_every and trainer.step_count % cfg.ckpt_every == 0:
                    _save(trainer, run, numbered=True)
            done = trainer.step_count
            finished = done >= iters or out_of_time
            if cfg.sample_every and finished and done % cfg.sample_every == 0:
                grid(done)
            if finished:
                grid(done, final=True)
            if not (cfg.ckpt_every and done % cfg.ckpt_every == 0 and done > step0):
                _save(trainer, run, numbered=finished)
    except trainer.compile_errors as e:
        cause = getattr(e, "inner_exception", None) or e
        first = (str(cause).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"train.compile: torch.compile failed on this machine ({type(cause).__name__}: "
            f"{first}); set train.compile=false"
        ) from e
    finally:
        if bar:
            bar.close()
        logger.close()
    if interrupted:
        write(
            f"Interrupted: checkpoint saved at iteration {trainer.step_count}; continue with "
            f"`digitgan train --resume {root}`"
        )
    seconds = time.perf_counter() - t0
    return TrainResult(root, trainer.step_count, interrupted, stats, seconds, out_of_time)


def train(
    cfg: Config,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Train ``cfg`` from scratch into run directory ``out`` (default ``runs/<preset>-<time>``).

    ``progress`` shows a progress bar (default: when stderr is a terminal). ``dataset``
    may be given already loaded; otherwise ``cfg.data.dataset`` is loaded.

    Under torchrun every process calls this (as ``digitgan train`` does) and they train as
    one run: see README-distributed.md. Only rank 0 creates and writes ``out``.
    """
    with session() as dist:
        device = dist.place(resolve_device(cfg.train.device))
        dataset = dataset or _load_dataset(cfg, dist)
        # these two before the run dir: a bad config or model leaves no run directory
        evaluator = dist.on_main(lambda: _evaluator(cfg, dataset))
        trainer = GANTrainer(cfg, dataset, device, dist)

        def create() -> RunDir:
            run = RunDir.create(out or RunDir.default_path(cfg.preset), force=force)
            try:
                run.write_config(cfg.to_toml())
            except BaseException:
                run.close()
                raise
            return run

        with dist.on_main(create) or nullcontext() as run:
            iters = cfg.train.iters
            return _fit(trainer, run, iters, _want_progress(progress), True, evaluator)


def resume(
    run_dir: str | Path,
    iters: int | None = None,
    *,
    sets: Sequence[str] = (),
    progress: bool | None = None,
    device: str | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Continue a run from its latest checkpoint, to ``iters`` (default: its configured total).

    Model, optimiser, step, random states and data order are restored, so the result is the
    same as an uninterrupted run (bit for bit on the CPU). ``sets`` changes settings from
    here on, as ``section.key=value`` strings (e.g. ``["optim.lr_d=5e-4"]``); the fields in
    :data:`FIXED_ON_RESUME` cannot change. Under torchrun every process calls this; see
    README-distributed.md for resuming with another number of processes.
    """
    latest = RunDir(run_dir).checkpoints / f"{LATEST}{SUFFIX}"

    def open_run() -> RunDir:
        run = RunDir.open(run_dir)
        if not latest.exists():
            run.close()
            raise CheckpointError(
                f"--resume {run.root}: the run has no checkpoint yet (it stopped before its "
                f"first one); start it again with `digitgan train --out {run.root} --force`"
            )
        return run

    with session() as dist, dist.on_main(open_run) or nullcontext() as run:
        trainer, dataset = restore_trainer(latest, iters, sets, device, dataset, dist)
        evaluator = dist.on_main(lambda: _evaluator(trainer.cfg, dataset))

        def continue_run() -> None:
            run.write_config(trainer.cfg.to_toml())
            run.truncate_metrics(trainer.step_count)

        dist.on_main(continue_run)
        return _fit(
            trainer, run, trainer.cfg.train.iters, _want_progress(progress), False, evaluator
        )


FIXED_ON_RESUME = ("model", "data.dataset", "train.seed", "train.ema_decay")
"""What a resume cannot change: the models, the data, the seed of the fixed noise, the EMA."""


def restore_trainer(
    path: Path,
    iters: int | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    dataset: Dataset | None = None,
    dist: Dist = SINGLE,
) -> tuple[GANTrainer, Dataset]:
    """(trainer, dataset): a trainer in the state saved in checkpoint ``path``, with ``sets``
    applied to its config, and the dataset it trains on.

    Everything in the file is checked before it is used: a damaged, tampered or mismatched
    checkpoint raises CheckpointError (or ConfigError for its config), never a PyTorch error.
    Across processes, rank 0 reads the file and sends its bytes to the others.
    """
    data = dist.broadcast_bytes(dist.on_main(lambda: read_checkpoint_bytes(path)))
    tensors, meta = parse_checkpoint(data, path)
    saved = checkpoint_config(meta, path)
    check_models(saved.model, meta, tensors, "GD", path)
    cfg = saved.replace()
    apply_sets(cfg, sets)
    before, after = saved.to_dict(), cfg.to_dict()
    for section in SECTIONS:
        for name, value in after[section].items():
            key = f"{section}.{name}"
            fixed = key in FIXED_ON_RESUME or section in FIXED_ON_RESUME
            if fixed and value != before[section][name]:
                raise ConfigError(
                    f"--set {key}: cannot change when resuming a run (it is fixed by the "
                    "checkpoint); start a new run for that"
                )
    overrides = {"train__iters": iters, "train__device": device}
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    device = dist.place(resolve_device(cfg.train.device))
    dataset = dataset or _load_dataset(cfg, dist)
    trainer = GANTrainer(cfg, dataset, device, dist)
    trainer.load_state(tensors, meta, path)
    return trainer, dataset


def _load_dataset(cfg: Config, dist: Dist) -> Dataset:
    """``cfg``'s dataset, loaded on rank 0 first (so that a download happens once)."""
    return dist.main_first(lambda: load_dataset(cfg.data.dataset, cfg.data.data_dir or None))


def _want_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress
