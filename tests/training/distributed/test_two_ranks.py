"""Two processes under torchrun on the CPU (Gloo on 127.0.0.1) train as one run.

One launch (of rank_main.py, which runs `digitgan` commands in every rank, each rank in a
working directory of its own) serves every test here: torchrun's start-up costs seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import Stepping
from safetensors.torch import load_file

import digitgan
from digitgan.cli import main
from digitgan.models import sample_noise
from digitgan.store.checkpoint import read_checkpoint
from digitgan.training.distributed import STOP_CHECK_EVERY
from digitgan.training.trainer import noise_stream

HERE = Path(__file__).parent
CLASSIFIER = Path(digitgan.__file__).parent / "eval" / "weights" / "mnist20k.safetensors"
WORLD = 2
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, and the ranks busy

TINY = [
    "--batch-size",
    "16",
    "--set",
    "model.mlp.g_hidden=[16]",
    "--set",
    "model.mlp.d_hidden=[16]",
]
TINY += ["--no-progress"]
"""Options for a tiny model (the global batch of 16 is 8 images per rank)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Torchrun:
    """``python -m torch.distributed.run --nproc_per_node 2`` on 127.0.0.1, one thread per rank.

    torchrun starts each rank in a session of its own and passes the signals it gets (SIGINT,
    SIGTERM) on to them, so tests signal torchrun alone."""

    def __init__(self, *args: str | Path, cwd: Path):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
        src = str(Path(digitgan.__file__).parents[1])
        env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [*command, *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def line(self, timeout: float = 120) -> str:
        """The next line of the ranks' standard output."""
        lines = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout)
        if not lines:
            self.finish(timeout=0)
        return lines[0]

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once it ends; killed (and the test failed) on timeout."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # torchrun stops its ranks (SIGTERM, then SIGKILL after 30 s)
            out, err = self.proc.communicate(timeout=60)
            raise AssertionError(f"torchrun hung for {timeout} s:\n{out}\n{err}") from None
        return self.proc.returncode, out, err


LOGS = ["--set", "log.sample_every=2", "--set", "log.print_every=3", "--set", "log.tb_every=2"]
LOGS += ["--set", "log.ckpt_every=3", "--set", "log.grid_rows=2"]

SCENARIOS = {
    # name: (command, exit status on both ranks)
    "straight": (["train", "--out", "straight", "--iters", "6", *TINY, *LOGS], 0),
    "part": (["train", "--out", "resumed", "--iters", "3", *TINY, *LOGS], 0),
    "resume": (["train", "--resume", "resumed", "--iters", "6", "--no-progress"], 0),
    "gp": (
        ["train", "--out", "gp", "--iters", "3", *TINY, "--set", "train.d_steps=2"]
        + ["--set", "loss.objective=wgan", "--set", "loss.gp.weight=10"],
        0,
    ),
    # BatchNorm (buffers), spectral norm, class conditioning, EMA
    "conv": (
        ["train", "--out", "conv", "--preset", "dcgan", "--iters", "2", "--batch-size", "8"]
        + [
            "--set",
            "model.dcgan.g_channels=4",
            "--set",
            "model.dcgan.d_channels=4",
            "--no-progress",
        ]
        + ["--set", "model.conditional=true", "--set", "model.spectral_norm=true"],
        0,
    ),
    # model.clusters: found on rank 0 and shared, so both ranks judge by the same clusters
    "clusters": (
        ["train", "--out", "clusters", "--preset", "clusters", "--iters", "2", "--batch-size", "8"]
        + ["--dataset", "npz:{small}", "--set", "model.categories=3", "--no-progress"]
        + ["--set", "model.dcgan.g_channels=4", "--set", "model.dcgan.d_channels=4"],
        0,
    ),
    # ADA: r_t averaged over the ranks, so p moves alike on both
    "ada": (
        ["train", "--out", "ada", "--iters", "2", *TINY, "--set", "augment.mode=ada"]
        + ["--set", "augment.ada.interval=2", "--set", "augment.ada.ramp_images=64"],
        0,
    ),
    "exists": (["train", "--out", "straight", "--iters", "2", *TINY], 2),
    "diverge": (
        ["train", "--out", "diverge", "--iters", "50", *TINY, "--set", "log.tb_every=1"]
        + ["--set", "optim.lr_d=1e30", "--set", "optim.lr_g=1e30"],
        2,
    ),
    "from_one": (["train", "--resume", "{single}", "--iters", "5", "--no-progress"], 0),
    # seeds divided among the ranks (0 and 2 stacked on rank 0, 1 on rank 1), no gradient sharing
    "seeds": (["train", "--out", "{seeds}", "--seeds", "0-2", "--iters", "3", *TINY], 0),
    # evaluation on rank 0, and its best checkpoint with every rank's noise
    "eval": (
        ["train", "--out", "eval", "--iters", "2", *TINY, "--dataset", "npz:{small}"]
        + ["--set", "log.eval_every=1", "--set", "log.eval_samples=20"]
        + ["--set", "log.eval_classifier={classifier}"],
        0,
    ),
}


@pytest.fixture(scope="module")
def launch(tmp_path_factory, mnist20k) -> SimpleNamespace:
    """Every scenario, in order, in one torchrun launch of two ranks."""
    root = tmp_path_factory.mktemp("dist")
    for rank in range(WORLD):
        (root / f"rank{rank}").mkdir()
    single = root / "single"  # a one-process run, to be continued by two
    assert main(["train", "--out", str(single), "--iters", "3", *TINY]) == 0
    small = root / "small.npz"  # a small test split: the evaluations' reference is quick
    t, v = mnist20k.train, mnist20k.test
    np.savez(
        small,
        x_train=t.images[:512, 0],
        y_train=t.labels[:512],
        x_test=v.images[:200, 0],
        y_test=v.labels[:200],
    )
    places = {"single": single, "small": small, "classifier": CLASSIFIER, "seeds": root / "seeds"}
    scenarios = [
        [name, [a.format(**places) for a in command]] for name, (command, _) in SCENARIOS.items()
    ]
    code, out, err = Torchrun(HERE / "rank_main.py", root, json.dumps(scenarios), cwd=root).finish()
    assert code == 0, out + err
    return SimpleNamespace(
        root=root,
        runs=root / "rank0",
        single=single,
        out=out,
        err=err,
        codes=[json.loads((root / "dumps" / f"rank{r}.json").read_text()) for r in range(WORLD)],
    )


def _dump(launch, name: str, rank: int) -> dict[str, torch.Tensor]:
    return load_file(launch.root / "dumps" / name / f"rank{rank}.safetensors")


def _latest(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "latest.safetensors")


def test_both_ranks_end_every_command_alike(launch):
    expected = {name: code for name, (_, code) in SCENARIOS.items()}
    assert launch.codes == [expected] * WORLD, launch.err


def test_rank_1_writes_nothing_and_rank_0_writes_every_output(launch):
    assert list((launch.root / "rank1").iterdir()) == []
    run = launch.runs / "straight"
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
        "003.png",
        "final.png",
    ]
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.safetensors")) == [
        "latest.safetensors",
        "step-0000003.safetensors",
        "step-0000006.safetensors",
    ]
    assert len(list((run / "tb").iterdir())) == 1  # one event file, from rank 0
    # only rank 0 prints: one loss line per print step, one summary per finished command (but
    # for --seeds, where each rank trains and reports its own runs)
    assert launch.out.count("Iter: 3 ") == 2  # straight and resume
    finished = [name for name, (_, code) in SCENARIOS.items() if code == 0 and name != "seeds"]
    assert launch.out.count("finished iteration") == len(finished) + 3


@pytest.mark.parametrize(
    "name", ["straight", "resume", "gp", "conv", "clusters", "ada", "from_one", "eval"]
)
def test_ranks_hold_identical_weights_and_their_own_noise(launch, name):
    a, b = _dump(launch, name, 0), _dump(launch, name, 1)
    assert a.keys() == b.keys()
    assert ("data.clusters" in a) == (name == "clusters")
    # BatchNorm running statistics are rank 0's after each broadcast, then each rank's own
    buffers = [k for k in a if re.search(r"running_|num_batches", k)]
    assert bool(buffers) == (name in ("conv", "clusters"))  # the dcgan G's BatchNorm
    assert ("augment.p" in a) == (name == "ada")
    for key in a.keys() - {"noise", *buffers}:  # weights (EMA too), Adam moments, ADA's p
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["noise"], b["noise"])


def test_the_checkpoint_holds_rank_0_weights_and_every_ranks_noise(launch):
    tensors, meta = read_checkpoint(launch.runs / "straight" / "checkpoints" / "latest.safetensors")
    assert meta["world_size"] == WORLD and meta["step"] == 6
    rank0, rank1 = _dump(launch, "straight", 0), _dump(launch, "straight", 1)
    for key, value in rank0.items():
        if key != "noise":
            assert torch.equal(tensors[key], value), key
    assert torch.equal(tensors["rng.noise.rank0"], rank0["noise"])
    assert torch.equal(tensors["rng.noise.rank1"], rank1["noise"])
    assert "rng.noise" not in tensors


def test_a_resumed_distributed_run_equals_an_uninterrupted_one(launch):
    a, b = _latest(launch.runs / "straight"), _latest(launch.runs / "resumed")
    assert a.keys() == b.keys()
    for key in a:  # weights, Adam moments, every rank's noise state, data order
        assert torch.equal(a[key], b[key]), key

    def steps(run):
        return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]

    assert steps(launch.runs / "resumed") == steps(launch.runs / "straight")


def _one_process_reference(run: Path, dataset, split: bool) -> Stepping:
    """The run of ``run``'s config in one process on the global batch; with ``split``, each
    step's noise (and gradient-penalty mixing) drawn as the ranks draw theirs: half from each
    rank's stream."""
    cfg = digitgan.Config.from_dict(tomllib.loads((run / "config.toml").read_text()))
    # the ranks ran the generic step (the dense kernel does not handle several processes)
    trainer = Stepping(cfg.replace(train__device="cpu", train__fast_step=False), dataset)
    if split:
        gens = [noise_stream(torch.device("cpu"), cfg.train.seed, r) for r in range(WORLD)]
        m = cfg.model

        def noise(n, generator=None, out=None):
            z = torch.cat([sample_noise(n // WORLD, m.z_dim, m.noise, g) for g in gens])
            return z if out is None else out.copy_(z)

        def rand(shape, normal=False):  # (a penalty's values are per sample)
            draw = torch.randn if normal else torch.rand
            return torch.cat([draw((shape[0] // WORLD, *shape[1:]), generator=g) for g in gens])

        trainer.trainer.noise, trainer.trainer.rand = noise, rand
    for _ in range(cfg.train.iters):
        trainer.step()
    return trainer


def _weights(trainer: Stepping) -> dict[str, torch.Tensor]:
    return {
        f"{p}.{k}": v
        for p, m in (("G", trainer.G), ("D", trainer.D))
        for k, v in m.state_dict().items()
    }


@pytest.mark.parametrize("name", ["straight", "gp"])
def test_a_distributed_step_is_a_one_process_step_on_the_global_batch(launch, mnist20k, name):
    """Up to float rounding of the gradient averaging: with and without gradient penalty.

    Adam divides by sqrt(v), so an element whose gradient is zero up to rounding (a dead
    unit's bias) can move by up to one learning rate on rounding alone: at most a couple of
    elements may differ by more than 1e-6, and none by more than a few learning rates."""
    ref = _weights(_one_process_reference(launch.runs / name, mnist20k, split=True))

    def differing(weights: dict[str, torch.Tensor]) -> tuple[int, float]:
        gaps = torch.cat([(weights[k] - v).abs().flatten() for k, v in ref.items()])
        return int((gaps > 1e-6).sum()), gaps.max().item()

    count, largest = differing(_dump(launch, name, 0))
    assert count <= 2 and largest < 3e-3, (count, largest)
    # the test can tell: the same steps with other noise move most weights beyond 1e-6
    plain = _one_process_reference(launch.runs / name, mnist20k, split=False)
    assert differing(_weights(plain))[0] > 1000


def test_rank_0_errors_reach_every_rank_and_are_printed_once(launch):
    exists = re.findall(r"digitgan: error: .*run directory straight already exists", launch.err)
    assert len(exists) == 1
    # divergence: every rank sees the same averaged losses, so all stop together (no hang)
    assert "digitgan: error: training diverged at iteration" in launch.err
    assert "Traceback" not in launch.err


def test_a_run_continues_with_another_number_of_processes(launch, tmp_path):
    _, meta = read_checkpoint(launch.single / "checkpoints" / "latest.safetensors")
    assert meta["step"] == 5 and meta["world_size"] == WORLD
    assert "Note: continuing a run of 1 process with 2" in launch.out
    # and back to one process: the data order continues, the noise is reseeded
    run = shutil.copytree(launch.runs / "straight", tmp_path / "run")
    result = digitgan.resume(run, iters=8, progress=False)
    assert result.step == 8
    tensors, meta = read_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert meta["world_size"] == 1 and "rng.noise" in tensors


def test_ctrl_c_stops_both_ranks_at_one_iteration_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    options = ["--iters", 10**6, *TINY, "--set", "log.print_every=50"]
    torchrun = Torchrun("-m", "digitgan", "train", "--out", run, *options, cwd=tmp_path)
    first = torchrun.line()
    assert first.startswith("Iter: 0 "), first  # the loop and its Ctrl-C handler are running
    time.sleep(0.5)
    torchrun.proc.send_signal(signal.SIGINT)  # as Ctrl-C in its terminal: passed on to the ranks
    _, out, err = torchrun.finish(timeout=60)
    stopped = re.findall(r"Interrupted: checkpoint saved at iteration (\d+)", out)
    assert len(stopped) == 1, out + err  # printed by rank 0 alone
    step = int(stopped[0])
    assert step > 0 and step % STOP_CHECK_EVERY == 0  # where the ranks agree to stop
    tensors, meta = read_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert meta["step"] == step and {"rng.noise.rank0", "rng.noise.rank1"} <= tensors.keys()
    assert "KeyboardInterrupt" not in err  # stopped, not aborted


def test_rank_0_evaluates_and_keeps_the_best_checkpoint_with_every_ranks_noise(launch):
    run = launch.runs / "eval"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/fid" in r] == [1, 2]
    tensors, meta = read_checkpoint(run / "checkpoints" / "best.safetensors")
    assert meta["eval"]["step"] in (1, 2) and meta["world_size"] == WORLD
    assert {"rng.noise.rank0", "rng.noise.rank1"} <= tensors.keys()


def test_seeds_are_divided_among_the_ranks_and_each_equals_its_one_process_run(
    launch, mnist20k, tmp_path
):
    """Rank 0 trained seeds 0 and 2 stacked, rank 1 seed 1 alone: each run as `digitgan train
    --seed S` in one process gives it, to float rounding (the stacked products)."""
    assert sorted(p.name for p in (launch.root / "seeds").iterdir()) == [
        "seed-0",
        "seed-1",
        "seed-2",
    ]
    for seed in range(3):
        ref = tmp_path / f"ref-{seed}"
        assert main(["train", "--out", str(ref), "--seed", str(seed), "--iters", "3", *TINY]) == 0
        a, b = _latest(ref), _latest(launch.root / "seeds" / f"seed-{seed}")
        assert a.keys() == b.keys()
        for key in a:
            if a[key].is_floating_point() and not key.startswith(("rng.", "data.")):
                torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=3e-3 * 3, msg=key)
            else:
                assert torch.equal(a[key], b[key]), key
