"""digitgan: generative adversarial networks for small images.

The library API (the command line is a thin layer over it)::

    import digitgan

    cfg = digitgan.preset("seed").replace(train__iters=2000)
    result = digitgan.train(cfg, out="runs/demo")      # -> TrainResult(run_dir, step, ...)
    gan = digitgan.load("runs/demo")                   # run directory or checkpoint file
    images = gan.generate(16, seed=0)                  # float tensor (16, 1, 28, 28) in [0, 1]
    digits = gan.sample(16, seed=0)                    # uint8 array (16, 1, 28, 28)
    report = digitgan.evaluate("runs/demo")            # FID, KID, precision/recall, ...
    spread = digitgan.evaluate_runs("runs/sweep")      # each seed-N run: median and range
    print(report.table())                              # (digitgan.eval has each metric)
"""

from .version import __version__ as __version__

_EXPORTS = {
    "Config": "config",
    "preset": "config",
    "build_config": "config",
    "PRESETS": "config",
    "train": "training.loop",
    "resume": "training.loop",
    "TrainResult": "training.loop",
    "Trainer": "training.trainer",
    "Hook": "training.hooks",
    "load": "sampling",
    "Sampler": "sampling",
    "load_dataset": "data",
    "DigitganError": "errors",
    "evaluate": "eval.evaluate",
    "evaluate_real": "eval.evaluate",
    "evaluate_runs": "eval.runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Imported on first use, so `digitgan --help` does not wait for PyTorch.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'digitgan' has no attribute {name!r}")
