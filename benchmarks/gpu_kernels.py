"""Where a replayed training iteration's GPU time goes: the top kernels, per case.

Each argument is a case, ``PRESET:SEEDS[:KEY=VALUE...]`` (say ``dcgan:8`` or
``seed:64:train.precision=tf32``): the step of that many seeds of the preset on CUDA (stacked
when more than one; replayed from its CUDA graph) is run 20 times, timed over 50 iterations,
then profiled over 50 more with ``torch.profiler``. For each case it prints the wall time and
the summed kernel time per iteration, the kernels per iteration, and the 10 kernels that took
the most time.

Usage: python benchmarks/gpu_kernels.py CASE [CASE ...]   (needs a CUDA device)
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import digitgan
from digitgan.training.loop import seed_configs, seeds_step
from digitgan.training.trainer import Trainer

for spec in sys.argv[1:]:
    name, k, *sets = spec.split(":")
    cfg = digitgan.build_config(name, None, sets, {"train.device": "cuda"})
    data = digitgan.load_dataset(cfg.data.dataset)
    step = seeds_step([Trainer(c, data, "cuda") for c in seed_configs(cfg, range(int(k)))])
    for _ in range(20):
        step()
    torch.cuda.synchronize()
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / n * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    ka = [e for e in p.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in ka) / n / 1e3
    kernels = sum(e.count for e in ka) / n
    print(f"\n== {spec}: wall {wall:.3f} ms/it, GPU kernels {total:.3f} ms/it, ", end="")
    print(f"{kernels:.0f} kernels/it")
    for e in sorted(ka, key=lambda e: -e.self_device_time_total)[:10]:
        print(f"  {e.self_device_time_total / n:9.1f} us/it {e.count / n:5.1f}x  {e.key[:110]}")
