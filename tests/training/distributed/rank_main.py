"""Test-only launcher, run by torchrun in every rank: `digitgan` commands, each rank in its own
working directory, with each rank's final trainer state dumped for the tests to compare.

Usage (by the tests): torchrun ... rank_main.py ROOT SCENARIOS_JSON

Rank r works in ROOT/rank<r> (HOME and TMPDIR point there too, so that anything the rank
writes, to a relative path or a cache, lands there); the test checks that ROOT/rank1 stays
empty. SCENARIOS_JSON is a list of [name, argv] pairs, run in order with digitgan.cli.main in
this one process (so one launch serves many scenarios, in one process group). After each, the
rank writes ROOT/dumps/<name>/rank<r>.safetensors (its G, D, EMA, Adam and augmentation
tensors, its training images' clusters and noise state, when the command trained) and
finally ROOT/dumps/rank<r>.json, the exit codes.
"""

import json
import os
import sys
from pathlib import Path

root, scenarios = Path(sys.argv[1]), json.loads(sys.argv[2])
rank = int(os.environ["RANK"])
home = root / f"rank{rank}"
os.environ["HOME"] = os.environ["TMPDIR"] = str(home)
os.chdir(home)

from safetensors.torch import save_file  # noqa: E402

from digitgan.cli import main  # noqa: E402
from digitgan.store.checkpoint import optimizer_tensors  # noqa: E402
from digitgan.training import loop  # noqa: E402

trained = []
fit = loop.fit


def capture(run_loop, *args, **kwargs):
    trained.append(run_loop.trainer)
    return fit(run_loop, *args, **kwargs)


loop.fit = capture


def dump(trainer, path: Path) -> None:
    """This rank's state, without any collective (a state() call would gather)."""
    tensors = {"noise": trainer.noise_gen.get_state()}
    models = {"G": trainer.G, "D": trainer.D}
    if trainer.ema:
        models["G_ema"] = trainer.ema.model
    for prefix, module in models.items():
        tensors |= {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
    for prefix, opt in (("opt_g", trainer.opt_g), ("opt_d", trainer.opt_d)):
        tensors |= optimizer_tensors(opt, prefix)[0]
    if trainer.augment:
        tensors |= {f"augment.{k}": v for k, v in trainer.augment.state().items()}
    if trainer.cfg.model.clusters:
        tensors["data.clusters"] = trainer.batches.labels
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)


codes = {}
for name, argv in scenarios:
    trained.clear()
    codes[name] = main(argv)
    if codes[name] == 0 and trained:
        dump(trained[-1], root / "dumps" / name / f"rank{rank}.safetensors")
(root / "dumps" / f"rank{rank}.json").write_text(json.dumps(codes))
