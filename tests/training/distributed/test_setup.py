"""The pieces of distributed training that need no second process: environment, devices,
batch shards, the batch-size rule and copies of another rank's errors."""

import pytest
import torch
from helpers import Stepping

from digitgan.errors import ConfigError, DigitganError, RunDirError
from digitgan.training.batches import EpochBatches
from digitgan.training.distributed import SINGLE, Dist, _copy_of, session


def test_without_torchrun_training_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with session() as dist:
        assert dist is SINGLE
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1
    with session() as dist:
        assert dist is SINGLE


def test_a_partial_torchrun_environment_is_a_clear_error(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        with session():
            pass
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two': expected an integer"):
        with session():
            pass


def test_each_rank_trains_on_its_own_gpu_and_cpus_stay_cpus():
    dist = Dist(rank=1, world=2, local_rank=1)
    assert dist.place(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="cuda:LOCAL_RANK; give --device cuda"):
        dist.place(torch.device("cuda", 0))
    assert SINGLE.place(torch.device("cuda", 3)) == torch.device("cuda", 3)


def test_the_ranks_shards_make_up_the_global_batch():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    labels = torch.arange(50)

    def batches(shard, n=7):  # 7 batches of 12 from 50 images: crosses epoch boundaries
        gen = torch.Generator().manual_seed(5)
        b = EpochBatches(images, labels, 12, gen, out_range=(0.0, 255.0), shard=shard)
        return [b.next()[1] for _ in range(n)]

    whole = batches((0, 1))
    parts = [batches((rank, 3)) for rank in range(3)]
    for i, batch in enumerate(whole):
        assert torch.equal(torch.cat([p[i] for p in parts]), batch)
    with pytest.raises(ValueError, match="cannot take part 0 of 5 of a batch of 12"):
        batches((0, 5))


def test_the_global_batch_must_divide_among_the_processes(tiny_cfg, small_data):
    with pytest.raises(ConfigError, match="data.batch_size: 16 images do not divide among 3"):
        Stepping(tiny_cfg, small_data, dist=Dist(rank=0, world=3))


def test_a_copy_of_another_ranks_error_keeps_its_type_and_says_where():
    error = _copy_of("RunDirError\nrun directory r already exists", origin=0)
    assert type(error) is RunDirError and error.origin_rank == 0
    assert str(error) == "(rank 0) run directory r already exists"
    other = _copy_of("OSError\n[Errno 28] No space left on device", origin=2)
    assert type(other) is DigitganError
    assert str(other) == "(rank 2) OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize("rank, local", [("5", "0"), ("-1", "0"), ("1", "-2")])
def test_a_rank_outside_the_world_is_an_error_not_a_hang(monkeypatch, rank, local):
    env = {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": local}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"RANK={rank}, LOCAL_RANK={local} with WORLD_SIZE=2"):
        with session():
            pass
