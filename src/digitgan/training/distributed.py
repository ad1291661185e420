"""Training in several processes: PyTorch's launcher (torchrun), DistributedDataParallel.

``torchrun --nproc_per_node N -m digitgan train ...`` starts N processes ("ranks") with
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment. :func:`session` sees that and joins them in one process group (Gloo for CPU
tensors, NCCL for CUDA tensors where CUDA is available); without those variables, or with
``WORLD_SIZE=1``, it is :data:`SINGLE`, one process, and nothing here does anything.

A :class:`Dist` is what the trainer and the run need to know about the processes: this
rank, the world size, the local rank (which GPU), and a few collective operations. All of
them are called by every rank at the same point of the program: the training schedule is
the same on every rank, so they are. Control messages (stop flags, errors, checkpoint
bytes, random states) travel as CPU tensors, through Gloo even when training runs on
NCCL, so that they never wait for the GPU.

Errors: a mistake every rank makes alike (a bad option) is raised on every rank by itself.
What only rank 0 does (the run directory, checkpoint files) goes through
:meth:`Dist.on_main`, which shares the outcome, so that the other ranks raise a copy of
rank 0's error instead of waiting for it forever. A copy carries ``origin_rank``; the
command line prints each error once, on the rank where it happened.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .. import errors  # (the module: copies of errors are rebuilt by class name)
from ..errors import ConfigError, DigitganError

T = TypeVar("T")

STOP_CHECK_EVERY = 10
"""Across processes, a stop request (Ctrl-C) is agreed on every this many iterations."""

_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """This process's place among the processes of one training run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, prints and holds the run's lock."""
        return self.rank == 0

    # --- set-up ------------------------------------------------------------------------------

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: a CUDA device becomes ``cuda:LOCAL_RANK``."""
        if self.world == 1 or device.type != "cuda":
            return device
        if device.index is not None:
            raise ConfigError(
                f"--device {device}: under torchrun each process trains on cuda:LOCAL_RANK; "
                "give --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs"
            )
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ConfigError(
                f"LOCAL_RANK {self.local_rank}: this machine has {count} visible CUDA devices; "
                f"start at most {count} processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel (gradients averaged over the ranks in its
        backward pass, buffers broadcast from rank 0 in its forward pass), or ``module``
        itself in one process."""
        if self.world == 1:
            return module
        device = next(module.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # --- collectives (every rank calls them at the same point) ------------------------------

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over the ranks (on ``t``'s device)."""
        if self.world == 1:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t.div_(self.world)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def stop_now(self, requested: bool, step: int) -> bool:
        """Whether to stop before iteration ``step``: in one process, as soon as a stop is
        ``requested``; across processes, when any rank has requested one, agreed at every
        :data:`STOP_CHECK_EVERY`-th iteration so that all ranks stop at the same one."""
        if self.world == 1:
            return requested
        return step % STOP_CHECK_EVERY == 0 and self.any(requested)

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a CPU tensor of the same shape on every rank, in rank order."""
        if self.world == 1:
            return [t]
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return parts

    def broadcast_bytes(self, data: bytes | None, src: int = 0) -> bytes:
        """Rank ``src``'s ``data`` on every rank (the others pass None)."""
        if self.world == 1:
            return data
        size = torch.tensor([len(data) if self.rank == src else 0], dtype=torch.int64)
        dist.broadcast(size, src)
        if not size.item():
            return b""
        if self.rank == src:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            buf = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(buf, src)
        return buf.numpy().tobytes()

    def agree(self, error: Exception | None) -> None:
        """Each rank passes the error it met (or None); if any rank met one, every rank raises:
        those that met one their own, the others a copy of the lowest such rank's."""
        if self.world > 1:
            first = torch.tensor([self.rank if error is not None else self.world])
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
            origin = int(first.item())
            if origin < self.world:
                text = f"{type(error).__name__}\n{error}".encode() if self.rank == origin else None
                text = self.broadcast_bytes(text, src=origin).decode()
                if error is None:
                    raise _copy_of(text, origin)
        if error is not None:
            raise error

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` on rank 0 only (None elsewhere); an error it raises is raised on every rank."""
        if self.world == 1:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # shared with the other ranks, then raised here too
                error = e
        self.agree(error)
        return result

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then on the other ranks: rank 0 fills a cache (a download) before
        they read it. An error on any rank is raised on every rank."""
        result, error = self.on_main(fn), None
        if not self.is_main:
            try:
                result = fn()
            except Exception as e:
                error = e
        self.agree(error)
        return result


SINGLE = Dist()
"""One process: every collective is the identity."""


def _copy_of(text: str, origin: int) -> DigitganError:
    """A copy, on this rank, of an error that rank ``origin`` met (``TypeName\\nmessage``)."""
    name, _, message = text.partition("\n")
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DigitganError)):
        cls, message = DigitganError, f"{name}: {message}"
    error = cls(f"(rank {origin}) {message}")
    error.origin_rank = origin
    return error


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={value!r}: expected an integer (set by torchrun)"
        ) from None


@contextmanager
def session() -> Iterator[Dist]:
    """The processes this call runs in: :data:`SINGLE`, or the ranks of a torchrun launch.

    Under torchrun (``WORLD_SIZE`` > 1 in the environment) the default process group is
    initialised on first use ("cpu:gloo,cuda:nccl" where CUDA and NCCL are available, else
    "gloo") and kept until the process exits, so that one process may train, then resume,
    in the same group. A group the caller initialised already is used as it is (its local
    rank is ``LOCAL_RANK``, or else the rank modulo the number of GPUs).
    """
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        local = os.environ.get("LOCAL_RANK")
        local = _env_int("LOCAL_RANK") if local else rank % max(1, torch.cuda.device_count())
        yield Dist(rank, dist.get_world_size(), local)
        return
    world = _env_int("WORLD_SIZE") if "WORLD_SIZE" in os.environ else 1
    if world <= 1:
        yield SINGLE
        return
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: start distributed training "
            "with torchrun (python -m torch.distributed.run), which sets them"
        )
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world}: this PyTorch build has no torch.distributed")
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world or local < 0:
        raise ConfigError(
            f"RANK={rank}, LOCAL_RANK={local} with WORLD_SIZE={world}: a rank is in "
            f"0..{world - 1} and a local rank is not negative (torchrun sets them so)"
        )
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend)
    except (RuntimeError, ValueError) as e:  # DistNetworkError, DistStoreError, ...
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise DigitganError(
            f"rank {rank} of {world}: cannot join the other processes at {where} ({backend}): {e}"
        ) from None
    atexit.register(_close)
    yield Dist(rank, world, local)


def _close() -> None:
    """At exit: wait (a minute at most) until every rank is here, then tear the group down.
    A rank that tears down while another still talks to it can die in Gloo's threads
    (``terminate called without an active exception``, seen once in the two-rank tests)."""
    if dist.is_initialized():
        try:
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        except RuntimeError:  # a rank is gone (or the backend has no such barrier)
            pass
        dist.destroy_process_group()
