"""The iteration replayed from a CUDA graph (training/graph.py).

On the CPU, :class:`GraphStep` with ``capture=False`` runs what the graph records (the
replay batches, the device learning rates and EMA weight) eagerly: its iterations must be the
plain step's, bit for bit. On CUDA (skipped without it) the captured graph must give the
eager iterations' weights, resume exactly, and replay without a host sync."""

import pytest
import torch
from safetensors.torch import load_file

import digitgan
from digitgan.training.batches import EpochBatches
from digitgan.training.graph import WARMUP, GraphStep, ReplayBatches, graphable
from digitgan.training.hooks import Hook
from digitgan.training.loop import make_step, seeds_step
from digitgan.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("seed", {}),  # the dense kernel
    ("dcgan", {}),  # BatchNorm, EMA
    ("cdcgan", {}),  # labels, clusters, spectral norm, learning-rate schedule, EMA
    ("wgan-gp", {"train__d_steps": 2}),  # a penalty with its own randomness, several D steps
    ("hinge-sn", {"loss__objective": "rpgan", "loss__r1__gamma": 1.0}),  # pairs with reals
]


def _trainers(cfg, data, device, seeds):
    return [Trainer(cfg.replace(train__seed=s), data, device) for s in seeds]


def _state(trainers) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, t in enumerate(trainers) for k, v in t.state()[0].items()}


def test_replay_batches_take_the_eager_order_across_epochs():
    """Batches that cross an epoch boundary, new permutations and two runs' own streams:
    the indices a replay reads are those the eager step would take, in its order."""
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).repeat(1, 1, 2, 2)
    labels = torch.arange(10) * 3

    def streams():
        return [
            EpochBatches(images, labels + r, 4, torch.Generator().manual_seed(r)) for r in (0, 1)
        ]

    eager, replayed = streams(), streams()
    replay = ReplayBatches(replayed, count=2)
    for _ in range(7):  # 14 batches of 4 from 10 images: several epochs
        replay.fill()
        for _ in range(2):
            x, y = replay.next()
            want = [b.next() for b in eager]
            assert torch.equal(x, torch.cat([w[0] for w in want]))
            assert torch.equal(y, torch.cat([w[1] for w in want]))
        replay.taken = 0
    assert [b.pos for b in eager] == [b.pos for b in replayed]


@pytest.mark.parametrize("seeds", [[0], [0, 5]], ids=["one run", "stacked runs"])
@pytest.mark.parametrize("name, overrides", CASES, ids=[c[0] for c in CASES])
def test_what_the_graph_records_gives_the_plain_steps_iterations(
    tiny, small_data, name, overrides, seeds
):
    cfg = tiny(name, **overrides)
    plain_trainers = _trainers(cfg, small_data, "cpu", seeds)
    graphed_trainers = _trainers(cfg, small_data, "cpu", seeds)
    plain = seeds_step(plain_trainers)
    graphed = GraphStep(seeds_step(graphed_trainers), capture=False)
    for i in range(WARMUP + 4):
        a, b = plain(), graphed()
        assert torch.equal(a.d_loss, b.d_loss) and torch.equal(a.g_loss, b.g_loss), i
    a, b = _state(plain_trainers), _state(graphed_trainers)
    assert a.keys() == b.keys()
    for key in a:  # weights, EMA, Adam moments, random streams, data order
        assert torch.equal(a[key], b[key]), key


def test_a_run_is_graphed_only_on_cuda_where_nothing_is_decided_on_the_host(tiny, small_data):
    def graphed(name, **overrides):
        trainer = Trainer(tiny(name, **overrides), small_data)
        on_cpu = graphable(trainer)
        trainer.device = torch.device("cuda")  # (what graphable reads of the device)
        return on_cpu, graphable(trainer)

    assert graphed("cdcgan") == (False, True)
    assert graphed("wgan-gp") == (False, True)
    assert graphed("cdcgan", train__cuda_graph=False)[1] is False
    assert graphed("dcgan", augment__mode="ada")[1] is False
    assert graphed("dcgan", loss__instance_noise=0.1)[1] is False
    assert graphed("dcgan", train__precision="bf16")[1] is False
    assert graphed("hinge-sn", loss__r1__gamma=1.0, loss__lazy_every=4)[1] is False
    assert graphed("hinge-sn", loss__r1__gamma=1.0, loss__penalty_end=0.5)[1] is False
    assert graphed("hinge-sn", loss__r1__gamma=1.0)[1] is True
    assert type(make_step(Trainer(tiny("dcgan"), small_data))) is not GraphStep


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


TF32 = {"train__precision": "tf32", "train__cudnn_benchmark": True}


@cuda
@pytest.mark.parametrize("seeds", [[0], [0, 5]], ids=["one run", "stacked runs"])
@pytest.mark.parametrize(
    "name, overrides", [*CASES, ("dcgan", TF32)], ids=[c[0] for c in CASES] + ["dcgan-tf32"]
)
def test_a_captured_iteration_gives_the_eager_weights(tiny, small_data, name, overrides, seeds):
    cfg = tiny(name, "cuda", **overrides)
    eager_trainers = _trainers(cfg.replace(train__cuda_graph=False), small_data, "cuda", seeds)
    graph_trainers = _trainers(cfg, small_data, "cuda", seeds)
    eager, graphed = seeds_step(eager_trainers), seeds_step(graph_trainers)
    assert type(eager) is not GraphStep and type(graphed) is GraphStep
    for _ in range(WARMUP + 5):
        eager(), graphed()
    assert graphed.graph is not None
    a, b = _state(eager_trainers), _state(graph_trainers)
    worst = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a}
    print(name, seeds, "largest difference:", max(worst.values()), max(worst, key=worst.get))
    for key in a:
        if key.startswith(("0.rng.", "1.rng.", "0.data.", "1.data.")):
            assert torch.equal(a[key], b[key]), key  # the streams: exactly
        else:
            loose = overrides is TF32  # (cuDNN may pick other algorithms for the second run)
            tol = {"rtol": 1e-3, "atol": 1e-4} if loose else {"rtol": 1e-5, "atol": 1e-6}
            torch.testing.assert_close(b[key], a[key], **tol, msg=key)


@cuda
def test_a_replay_makes_no_host_sync(tiny, small_data):
    step = make_step(Trainer(tiny("cdcgan", "cuda"), small_data, "cuda"))
    for _ in range(WARMUP + 1):  # warm-up and capture
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            result = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(result.d_loss) and torch.isfinite(result.g_loss)


class _StopAt(Hook):
    """Interrupts the run after iteration ``n`` (a checkpoint is saved, as at Ctrl-C)."""

    def __init__(self, n: int):
        self.n = n

    def after_step(self, loop, result):
        if loop.trainer.step_count == self.n:
            loop.stopping.add("interrupted")


@cuda
@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_a_graphed_run_resumes_exactly(tmp_path, tiny, small_data, name):
    """The resumed run warms up eagerly where the uninterrupted one replays its graph."""
    cfg = tiny(name, "cuda", train__iters=12, log__ckpt_every=0)
    digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    part = digitgan.train(
        cfg, tmp_path / "b", dataset=small_data, progress=False, hooks=[_StopAt(6)]
    )
    assert part.step == 6
    digitgan.resume(tmp_path / "b", dataset=small_data, progress=False)
    a, b = (load_file(tmp_path / r / "checkpoints" / "latest.safetensors") for r in "ab")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
