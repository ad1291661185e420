"""TensorBoard summaries and metrics.jsonl for a run.

Tags: the scalars of a step (:meth:`~.step.StepResult.scalars`: ``D_loss``, ``G_loss``,
``D_real`` (mean D(x) on the real batch), ``D_fake`` (mean D(G(z)) on the fake batch) and
any extras), plus ``it_per_s``; with ``log.eval_every``, ``eval/fid``, ``eval/kl_uniform``,
``eval/classes_covered``, ``eval/mean_confidence`` (and ``eval/label_accuracy`` for
conditional models); histograms ``G/<param>`` and
``D/<param>`` of every weight and bias; the image ``samples`` (the fixed-noise grid);
and the graph of one discriminator evaluation on real and generated images.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..errors import RunDirError
from ..store.rundir import RunDir


class _GraphView(nn.Module):
    """G and D together, so the logged graph shows z -> G -> D and x -> D."""

    def __init__(self, G: nn.Module, D: nn.Module):
        super().__init__()
        self.generator, self.discriminator = G, D

    def forward(self, z, x, labels=None):
        # the eager modules, also under train.compile (jit cannot trace compiled ones)
        G, D = self.generator._call_impl, self.discriminator._call_impl
        g_labels = labels if self.generator.num_classes else None  # model.clusters: D's only
        return D(x, labels), D(G(z, g_labels), labels)


class RunLogger:
    """Writes a run's TensorBoard events and metrics.jsonl. A write that fails (in this thread
    or in TensorBoard's writer thread, whose traceback is kept from the console) is a
    RunDirError of one line at the next call."""

    def __init__(self, run: RunDir, purge_step: int | None = None):
        # imported here: TensorBoard's writer (tensorboard, protobuf) takes a large share of
        # start-up, and only the process that writes a run needs it
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.failed: BaseException | None = None
        self._excepthook = threading.excepthook
        threading.excepthook = self._thread_failed
        with self._writes():
            self.writer = SummaryWriter(log_dir=str(run.tb), purge_step=purge_step, flush_secs=30)
        self.t0 = time.time()

    def _thread_failed(self, args) -> None:
        """TensorBoard's writer thread failed: keep its error for the next call, quietly."""
        if type(args.thread).__module__.startswith("tensorboard"):
            self.failed = self.failed or args.exc_value
        else:
            self._excepthook(args)

    @contextmanager
    def _writes(self) -> Iterator[None]:
        """A failed write as a RunDirError naming the run's folder and the reason."""
        try:
            if self.failed is not None:
                raise self.failed
            yield
        except OSError as e:
            raise RunDirError(
                f"{self.run.root}: cannot write the run's logs (TensorBoard events in "
                f"{self.run.tb}, {self.run.metrics.name}): {e.strerror or e}"
            ) from None

    def scalars(self, step: int, stats: dict[str, float], it_per_s: float) -> None:
        with self._writes():
            for tag, value in stats.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.add_scalar("it_per_s", it_per_s, step)
            self.run.append_metrics(
                {
                    "step": step,
                    **stats,
                    "it_per_s": round(it_per_s, 2),
                    "wall_s": round(time.time() - self.t0, 3),
                }
            )

    def eval_scalars(self, step: int, values: dict[str, float], seconds: float) -> None:
        """Evaluation metrics (tags ``eval/...``) as scalars and one metrics.jsonl record, with
        the wall time (``wall_s``, as the loss records) and the evaluation's own (``eval_s``)."""
        with self._writes():
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            wall = round(time.time() - self.t0, 3)
            self.run.append_metrics({"step": step, **values, "wall_s": wall, "eval_s": seconds})

    def histograms(self, step: int, G: nn.Module, D: nn.Module, bins: int = 30) -> None:
        """A histogram of every parameter tensor: ``bins`` equal buckets from its minimum to
        its maximum, counted by torch where the tensor lives (add_histogram's numpy binning
        into TensorBoard's ~1,500 fixed buckets cost several ms a tensor, a few % of a fast
        run). The weights are finite here: the trainer checks that before logging."""
        with self._writes():
            for prefix, module in (("G", G), ("D", D)):
                for name, p in module.named_parameters():
                    v = p.detach().double().flatten()
                    lo, hi, total, squares = torch.stack(
                        [v.min(), v.max(), v.sum(), v.square().sum()]
                    ).tolist()
                    if hi > lo:
                        limits = torch.linspace(lo, hi, bins + 1)[1:].tolist()
                        counts = torch.histc(v, bins, lo, hi).tolist()
                    else:  # a constant tensor: one bucket
                        limits, counts = [hi], [v.numel()]
                    self.writer.add_histogram_raw(
                        f"{prefix}/{name}", lo, hi, v.numel(), total, squares, limits, counts, step
                    )

    def image(self, step: int, grid: np.ndarray) -> None:
        with self._writes():
            fmt = "HW" if grid.ndim == 2 else "HWC"
            self.writer.add_image("samples", grid, step, dataformats=fmt)

    def graph(self, trainer) -> None:
        """The model graph, traced once on a zero batch in eval mode, so that tracing neither
        draws random numbers nor moves BatchNorm statistics or spectral-norm vectors."""
        z = torch.zeros(2, trainer.cfg.model.z_dim, device=trainer.device)
        x = torch.zeros(2, *trainer.image_shape, device=trainer.device)
        inputs = (z, x)
        if trainer.D.num_classes:
            inputs += (torch.zeros(2, dtype=torch.long, device=trainer.device),)
        view = _GraphView(trainer.G, trainer.D).eval()
        try:
            with warnings.catch_warnings():  # TensorBoard's graph export still goes through jit
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                self.writer.add_graph(view, inputs)
        finally:
            view.train()

    def close(self) -> None:
        """Flush and close the event file (its writer thread ends here), then report a write
        that failed on the way."""
        try:
            with self._writes():
                self.writer.close()
                if self.failed is not None:
                    raise self.failed
        finally:
            threading.excepthook = self._excepthook
