"""The training loop: alternating discriminator and generator steps, with its outputs.

:class:`GANTrainer` owns the models, optimisers, random generators and data
order: everything a checkpoint must hold for an exact resume. :func:`train`
and :func:`resume` wrap it with a run directory, logging and Ctrl-C handling.

Randomness is drawn only from the trainer's own ``torch.Generator`` objects
(one for the data order, one for the noise), all seeded from ``train.seed``;
model init draws from the global generator inside a forked, seeded RNG scope,
so training neither reads nor disturbs the caller's global random state.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..config import Config
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, ConfigError
from ..losses import OBJECTIVES
from ..models import build_models, sample_noise
from ..viz import make_grid, save_png, to_uint8
from .batches import EpochBatches
from .checkpoint import (
    LATEST,
    SUFFIX,
    load_module_state,
    load_optimizer,
    optimizer_tensors,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
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


class GANTrainer:
    """Models, optimisers, data order and noise for one run; ``step()`` is one iteration."""

    def __init__(self, cfg: Config, dataset: Dataset, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.image_shape = dataset.image_shape
        self.num_classes = dataset.num_classes
        self.dataset_name = dataset.name
        seed = cfg.train.seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G, self.D = build_models(cfg.model, self.image_shape, self.num_classes)
        self.G.to(self.device)
        self.D.to(self.device)
        self.objective = OBJECTIVES[cfg.loss.objective]
        o = cfg.optim
        self.opt_g = torch.optim.Adam(
            self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), eps=o.eps
        )
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), eps=o.eps
        )
        self.batches = EpochBatches(
            torch.from_numpy(dataset.train.images).to(self.device),
            torch.from_numpy(dataset.train.labels).to(self.device),
            cfg.data.batch_size,
            _stream(self.device, seed, _DATA_STREAM),
            self.G.out_range,
        )
        self.noise_gen = _stream(self.device, seed, _NOISE_STREAM)
        n_fixed = cfg.log.grid_rows**2
        self.fixed_z = self.noise(n_fixed, _stream(torch.device("cpu"), seed, _FIXED_STREAM))
        self.step_count = 0
        self.last: dict[str, torch.Tensor] = {}

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` noise vectors on the training device, from the run's noise stream by default."""
        gen = generator or self.noise_gen
        m = self.cfg.model
        return sample_noise(n, m.z_dim, m.noise, gen, gen.device).to(self.device)

    def step(self) -> None:
        """One iteration: ``d_steps`` discriminator steps on real batches and fresh noise, then
        one generator step on fresh noise. Results stay on the device in ``self.last``."""
        G, D, obj = self.G, self.D, self.objective
        bs = self.cfg.data.batch_size
        for _ in range(self.cfg.train.d_steps):
            x, _labels = self.batches.next()
            with torch.no_grad():
                fake = G(self.noise(bs))
            real_logits, fake_logits = D(x), D(fake)
            d_loss = obj.d_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        D.requires_grad_(False)
        g_loss = obj.g_loss(D(G(self.noise(bs))))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        D.requires_grad_(True)
        self.step_count += 1
        self.last = {
            "D_loss": d_loss.detach(),
            "G_loss": g_loss.detach(),
            "real_logits": real_logits.detach(),
            "fake_logits": fake_logits.detach(),
        }

    def stats(self) -> dict[str, float]:
        """The last step's losses and mean D(x), D(G(z)) as floats (one host sync)."""
        s = self.last
        t = torch.stack(
            [
                s["D_loss"],
                s["G_loss"],
                torch.sigmoid(s["real_logits"]).mean(),
                torch.sigmoid(s["fake_logits"]).mean(),
            ]
        ).tolist()
        return dict(zip(("D_loss", "G_loss", "D_real", "D_fake"), t, strict=True))

    @torch.no_grad()
    def sample_grid(self):
        """The fixed-noise sample grid as a uint8 image (rows x rows digits)."""
        was_training = self.G.training
        self.G.eval()
        images = self.G(self.fixed_z)
        self.G.train(was_training)
        return make_grid(to_uint8(images, self.G.out_range), nrow=self.cfg.log.grid_rows)

    # --- checkpoint state -----------------------------------------------------------------

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, metadata) that restore this trainer exactly."""
        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors |= {f"D.{k}": v for k, v in self.D.state_dict().items()}
        tg, mg = optimizer_tensors(self.opt_g, "opt_g")
        td, md = optimizer_tensors(self.opt_d, "opt_d")
        b = self.batches.state_dict()
        tensors |= (
            tg
            | td
            | {
                "rng.data": b["rng"],
                "rng.noise": self.noise_gen.get_state(),
                "data.perm": b["perm"],
            }
        )
        meta = {
            "step": self.step_count,
            "config": self.cfg.to_dict(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "dataset": self.dataset_name,
            "out_range": list(self.G.out_range),
            "data_pos": b["pos"],
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
        load_optimizer(self.opt_g, tensors, meta["opt_g"], "opt_g", source)
        load_optimizer(self.opt_d, tensors, meta["opt_d"], "opt_d", source)
        try:
            self.batches.load_state_dict(
                {"perm": tensors["data.perm"], "pos": meta["data_pos"], "rng": tensors["rng.data"]}
            )
            self.noise_gen.set_state(tensors["rng.noise"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{source}: random or data-order state unusable: {e}") from None
        self.step_count = int(meta["step"])


# --- runs -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` and :func:`resume` return."""

    run_dir: Path
    step: int
    interrupted: bool
    stats: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


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


def _save(trainer: GANTrainer, run: RunDir, numbered: bool) -> None:
    tensors, meta = trainer.state()
    if numbered:
        save_checkpoint(run.checkpoints / f"step-{trainer.step_count:07d}{SUFFIX}", tensors, meta)
    save_checkpoint(run.checkpoints / f"{LATEST}{SUFFIX}", tensors, meta)


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


def _fit(
    trainer: GANTrainer,
    run: RunDir,
    iters: int,
    progress: bool,
    fresh: bool,
    evaluator=None,
) -> TrainResult:
    cfg = trainer.cfg.log
    logger = RunLogger(run, purge_step=None if fresh else trainer.step_count)
    if fresh:
        logger.graph(trainer)
    bar_cls, write = _console(progress)
    bar = (
        bar_cls(
            total=iters, initial=trainer.step_count, unit="it", dynamic_ncols=True, file=sys.stderr
        )
        if bar_cls
        else None
    )
    stop = _StopFlag()
    t0, step0 = time.perf_counter(), trainer.step_count
    stats: dict[str, float] = {}

    def grid(index_step: int, path: Path) -> None:
        image = trainer.sample_grid()
        save_png(path, image)
        logger.image(index_step, image)

    try:
        with _sigint_to(stop):
            while trainer.step_count < iters and not stop.requested:
                i = trainer.step_count  # the seed's 0-based iteration number
                if cfg.sample_every and i % cfg.sample_every == 0:
                    grid(i, run.grid_path(i // cfg.sample_every))
                trainer.step()
                log_now = cfg.tb_every and i % cfg.tb_every == 0
                print_now = cfg.print_every and i % cfg.print_every == 0
                if log_now or print_now:
                    stats = trainer.stats()
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
                if evaluator and trainer.step_count % cfg.eval_every == 0:
                    evaluator(trainer, run, logger)
                if cfg.ckpt_every and trainer.step_count % cfg.ckpt_every == 0:
                    _save(trainer, run, numbered=True)
            done = trainer.step_count
            if cfg.sample_every and done >= iters and done % cfg.sample_every == 0:
                grid(done, run.grid_path(done // cfg.sample_every))
            if done >= iters:
                grid(done, run.samples / "final.png")
            if not (cfg.ckpt_every and done % cfg.ckpt_every == 0 and done > step0):
                _save(trainer, run, numbered=done >= iters)
    finally:
        if bar:
            bar.close()
        logger.close()
    if stop.requested:
        write(
            f"Interrupted: checkpoint saved at iteration {trainer.step_count}; continue with "
            f"`digitgan train --resume {run.root}`"
        )
    return TrainResult(
        run.root, trainer.step_count, stop.requested, stats, time.perf_counter() - t0
    )


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
    """
    device = resolve_device(cfg.train.device)
    dataset = dataset or load_dataset(cfg.data.dataset, cfg.data.data_dir or None)
    evaluator = _evaluator(cfg, dataset)
    run = RunDir.create(out or RunDir.default_path(cfg.preset), force=force)
    run.write_config(cfg.to_toml())
    trainer = GANTrainer(cfg, dataset, device)
    return _fit(trainer, run, cfg.train.iters, _want_progress(progress), True, evaluator)


def resume(
    run_dir: str | Path,
    iters: int | None = None,
    *,
    progress: bool | None = None,
    device: str | None = None,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Continue a run from its latest checkpoint, to ``iters`` (default: its configured total).

    Model, optimiser, step, random states and data order are restored, so the result is the
    same as an uninterrupted run (bit for bit on the CPU).
    """
    run = RunDir.open(run_dir)
    path = resolve_checkpoint(run.root)
    tensors, meta = read_checkpoint(path)
    try:
        cfg = Config.from_dict(meta["config"], source=f"{path} config")
    except KeyError:
        raise CheckpointError(f"{path}: checkpoint has no config") from None
    overrides = {}
    if iters is not None:
        overrides["train__iters"] = iters
    if device is not None:
        overrides["train__device"] = device
    cfg = cfg.replace(**overrides)
    dataset = dataset or load_dataset(cfg.data.dataset, cfg.data.data_dir or None)
    evaluator = _evaluator(cfg, dataset)
    trainer = GANTrainer(cfg, dataset, resolve_device(cfg.train.device))
    trainer.load_state(tensors, meta, path)
    run.write_config(cfg.to_toml())
    run.truncate_metrics(trainer.step_count)
    return _fit(trainer, run, cfg.train.iters, _want_progress(progress), False, evaluator)


def _want_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress
