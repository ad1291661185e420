"""train.precision (bf16, tf32), train.cudnn_benchmark, train.compile and the inner loop's
freedom from host syncs.

The bf16 tests run on the CPU and, where there is one, on a GPU (CUDA autocast casts more
operations than the CPU's, e.g. the matrix-vector products of spectral norm). The compile
tests use dynamo with the ``aot_eager`` backend: everything digitgan does with a compiled
model (tracing, guards, the TensorBoard graph, checkpoints) without inductor's C++ build,
which takes ~30 s on a small CPU; benchmarks/bench_presets.py runs the real thing.
"""

import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import Stepping
from safetensors.torch import load_file
from torch.backends import cudnn

import digitgan
from digitgan.config import preset
from digitgan.errors import ConfigError
from digitgan.training.loop import make_step
from digitgan.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CONV_PRESETS = ("dcgan", "cdcgan", "wgan-gp", "hinge-sn")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CONV_PRESETS)
def test_bf16_runs_forward_passes_in_bfloat16_and_keeps_float32_state(
    tiny, name, device, small_data
):
    tr = Stepping(tiny(name, device, train__precision="bf16"), small_data, device)
    assert tr.hand_written is False
    seen = set()
    for module in (tr.G.body, tr.D.features):
        module.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    before = [p.detach().clone() for p in (*tr.G.parameters(), *tr.D.parameters())]
    for _ in range(3):
        tr.step()
        stats = tr.stats()
        assert all(math.isfinite(v) for v in stats.values()), stats
    assert seen == {torch.bfloat16}  # autocast is on in every forward pass of G and D
    r = tr.result
    assert all(v.dtype == torch.float32 for v in (r.d_loss, r.g_loss, r.real_logits, r.fake_logits))
    after = [*tr.G.parameters(), *tr.D.parameters()]
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # it learns
    for opt in (tr.opt_g, tr.opt_d):
        for state in opt.state.values():
            assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    ema = [*tr.ema.model.parameters(), *tr.ema.model.buffers()]
    assert all(t.dtype == torch.float32 for t in ema if t.is_floating_point())


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_penalty_under_bf16_autocast(tiny, device, small_data):
    """The penalty's autograd.grad (with create_graph) works inside autocast: its value and
    its gradients (second order, through bf16 convolutions) are float32 and agree with the
    fp32 ones to bfloat16 precision."""
    from contextlib import nullcontext

    from digitgan.losses import PenaltyBatch, gradient_penalty

    tr = Stepping(tiny("wgan-gp", device, train__precision="bf16"), small_data, device)
    x, _ = tr.batches.next()
    fake = tr.G(tr.noise(8)).detach()
    results = []
    for context in (nullcontext, tr.kernel.autocast):
        gen = torch.Generator(device).manual_seed(0)  # the same alphas

        def rand(shape, gen=gen):
            return torch.rand(shape, generator=gen, device=device)

        with context():
            gp = gradient_penalty(tr.D, PenaltyBatch(x, None, fake, None, rand)).mean()
        weights = [p for name, p in tr.D.named_parameters() if name.endswith("weight")]
        grads = torch.autograd.grad(gp, weights)
        assert gp.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
        results.append((gp, torch.cat([g.flatten() for g in grads])))
    (gp32, g32), (gp16, g16) = results
    assert gp16.item() == pytest.approx(gp32.item(), rel=0.02)
    assert g32.abs().max() > 0
    # bfloat16 keeps 8 bits of mantissa: compared as a whole, the gradients agree to a few %
    # (element by element, small ones differ by more on CUDA, where convolutions run in bf16)
    assert (g16 - g32).norm() <= 0.05 * g32.norm()


def _checkpoint(run: Path) -> dict:
    return load_file(run / "checkpoints" / "latest.safetensors")


def test_bf16_run_checkpoints_float32_and_resumes_bit_identically(tiny, tmp_path, small_data):
    cfg = tiny("wgan-gp", train__precision="bf16", train__iters=5)
    digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    digitgan.train(cfg.replace(train__iters=2), tmp_path / "b", dataset=small_data, progress=False)
    digitgan.resume(tmp_path / "b", iters=5, dataset=small_data, progress=False)
    a, b = _checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
        if a[k].is_floating_point():
            assert a[k].dtype == torch.float32, k
    # a bf16 checkpoint samples like any other; sampling itself runs in float32
    gan = digitgan.load(tmp_path / "a")
    assert gan.sample(3, seed=1).shape == (3, 1, 28, 28)


@pytest.mark.parametrize(("amx", "avx512_bf16"), [(True, True), (False, True), (False, False)])
def test_auto_precision_is_bf16_on_a_cpu_with_bf16_units_only(
    tiny, small_data, monkeypatch, amx, avx512_bf16
):
    from digitgan.training.step import uses_bf16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    units = amx or avx512_bf16
    tr = Stepping(tiny("dcgan", train__precision="auto"), small_data)
    seen = set()
    tr.G.body.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    tr.step()
    assert seen == {torch.bfloat16 if units else torch.float32}
    assert Stepping(tiny("seed", train__precision="auto"), small_data).hand_written is not units
    assert uses_bf16("auto", torch.device("cuda")) is False  # measured slower there


@pytest.mark.parametrize("overrides", [{"train__precision": "bf16"}, {"train__compile": True}])
def test_hand_written_step_only_in_fp32_and_eager(tiny, overrides, small_data):
    assert Stepping(tiny("seed"), small_data).hand_written is True
    assert Stepping(tiny("seed", **overrides), small_data).hand_written is False


def test_precision_and_compile_are_validated():
    with pytest.raises(ConfigError, match="'fp16' is not one of fp32, bf16, auto, tf32"):
        preset("seed").replace(train__precision="fp16")
    with pytest.raises(ConfigError, match="train.compile: expected true or false"):
        digitgan.build_config("seed", sets=["train.compile=maybe"])
    with pytest.raises(ConfigError, match="train.compile: torch.compile cannot differentiate"):
        preset("wgan-gp").replace(train__compile=True)  # (aot_autograd: no double backward)
    for name in ("seed", "dcgan", "wgan-gp", "hinge-sn", "fashion"):
        assert preset(name).train.precision == "fp32" and preset(name).train.compile is False
    for name in ("cdcgan", "stacked"):  # bf16 where the CPU has bf16 units
        assert preset(name).train.precision == "auto" and preset(name).train.compile is False


@pytest.fixture
def compile_backend(monkeypatch):
    """Make ``nn.Module.compile()`` use ``backend`` (set the returned list's one item)."""
    backend = ["aot_eager"]
    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: original(self, backend=backend[0]))
    torch._dynamo.reset()
    yield backend
    torch._dynamo.reset()


def test_compiled_run_writes_the_same_checkpoint_keys_and_resumes(
    tiny, tmp_path, small_data, compile_backend
):
    cfg = tiny("cdcgan", train__iters=3)  # conditional, spectral norm, EMA
    compiled = cfg.replace(train__compile=True)
    digitgan.train(cfg, tmp_path / "eager", dataset=small_data, progress=False)
    digitgan.train(compiled, tmp_path / "c", dataset=small_data, progress=False)
    eager, c = _checkpoint(tmp_path / "eager"), _checkpoint(tmp_path / "c")
    assert eager.keys() == c.keys()
    # the same math: the weights agree to float32 rounding
    for k in eager:
        assert torch.allclose(eager[k].float(), c[k].float(), atol=1e-4), k
    result = digitgan.resume(tmp_path / "c", iters=5, dataset=small_data, progress=False)
    assert result.step == 5 and all(math.isfinite(v) for v in result.stats.values())
    assert digitgan.load(tmp_path / "c").sample(2, seed=0, labels=[3, 4]).shape == (2, 1, 28, 28)


def test_compile_failure_is_a_config_error_naming_the_option(
    tiny, tmp_path, small_data, compile_backend
):
    def no_compiler(graph, example_inputs):
        raise RuntimeError("no working C++ compiler found\n(details)")

    compile_backend[0] = no_compiler
    with pytest.raises(ConfigError, match=r"^train.compile: .*no working C\+\+ compiler found"):
        digitgan.train(
            tiny("dcgan", train__compile=True), tmp_path / "r", dataset=small_data, progress=False
        )


# --- no host synchronisation in the inner loop ----------------------------------------------

_PACKAGE = str(Path(digitgan.__file__).parent)
_SYNCING = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def no_sync_calls(monkeypatch):
    """A function that, once called, fails when digitgan's own code calls a Tensor method that
    waits for the device (``.item()``, ``if tensor:``, ``float(tensor)``, ...). Calls inside
    PyTorch are not seen (the GPU check of bench_presets.py --check-sync sees those)."""

    def guard(name):
        original = getattr(torch.Tensor, name)

        def checked(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(_PACKAGE):
                raise AssertionError(f"host sync: Tensor.{name} called from {caller}")
            return original(self, *args, **kwargs)

        return checked

    def start():
        for name in _SYNCING:
            monkeypatch.setattr(torch.Tensor, name, guard(name))

    return start


NO_CLUSTERS = {"model__categories": 0, "model__clusters": False}


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("seed", {}),  # the hand-written step
        ("seed", {"train__fast_step": False, "loss__label_smoothing": 0.1}),
        ("dcgan", {"loss__instance_noise": 0.1}),
        ("cdcgan", {}),  # clusters within classes
        ("cdcgan", {"model__cond_d": "concat", **NO_CLUSTERS, "train__precision": "bf16"}),
        ("wgan-gp", {"loss__r1__gamma": 1.0}),
        ("hinge-sn", {}),
    ],
)
def test_step_makes_no_host_sync(tiny, name, overrides, small_data, no_sync_calls):
    tr = Stepping(tiny(name, **overrides), small_data)  # set-up may sync (clusters)
    no_sync_calls()
    tr.batches.pos = tr.batches.perm.numel() - 3  # a batch across an epoch boundary
    for _ in range(2):
        tr.step()
    # the guard works: the logging path (which may sync) trips it
    with pytest.raises(AssertionError, match="host sync: Tensor.tolist"):
        tr.stats()


def test_tf32_needs_a_cuda_device(tiny, small_data):
    with pytest.raises(ConfigError, match="train.precision: tf32 needs a CUDA device"):
        Trainer(tiny("dcgan", train__precision="tf32"), small_data, "cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_library_settings_hold_during_each_iteration_and_are_restored(
    tiny, small_data, device, monkeypatch
):
    """train.precision = tf32 (CUDA) and train.cudnn_benchmark are in force while an iteration
    runs, eager or as the CUDA graph records it, and the process's settings are back after."""
    overrides = {"train__cudnn_benchmark": True}
    if device == "cuda":
        overrides["train__precision"] = "tf32"
    trainer = Trainer(tiny("dcgan", device, **overrides), small_data, device)
    step = make_step(trainer)
    inner = getattr(step, "step", step)  # (the step a CUDA graph records)
    seen = []
    iterate = inner.iterate
    monkeypatch.setattr(
        inner,
        "iterate",
        lambda: seen.append((torch.get_float32_matmul_precision(), cudnn.benchmark)) or iterate(),
    )
    before = torch.get_float32_matmul_precision(), cudnn.benchmark
    for _ in range(5):
        assert torch.isfinite(step().d_loss)
    want = ("high" if device == "cuda" else before[0], True)
    assert seen and set(seen) == {want}
    assert (torch.get_float32_matmul_precision(), cudnn.benchmark) == before == ("highest", False)
