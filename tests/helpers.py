"""What several test modules share (importable: pyproject puts tests/ on the path)."""


class Stepping:
    """A trainer and the step ``digitgan train`` would give it, driven by hand in tests:
    ``step()`` runs one iteration, ``stats()`` reads its scalars as floats, and the trainer's
    attributes (``G``, ``D``, ``opt_d``, ...) are reachable directly."""

    def __init__(self, cfg, data, device="cpu", dist=None):
        from digitgan.training.distributed import SINGLE
        from digitgan.training.loop import make_step
        from digitgan.training.trainer import Trainer

        self.trainer = Trainer(cfg, data, device, dist or SINGLE)
        self.kernel = make_step(self.trainer)
        self.result = None

    @property
    def hand_written(self) -> bool:
        """Whether the step is the dense kernel rather than the generic one."""
        from digitgan.training.dense import DenseStep

        return isinstance(self.kernel, DenseStep)

    def step(self):
        self.result = self.kernel()
        return self.result

    def stats(self) -> dict[str, float]:
        """The last step's scalars as floats, read as the training loop reads them."""
        from digitgan.training.step import read_scalars

        return read_scalars(self.result, self.trainer.dist)

    def __getattr__(self, name):
        return getattr(self.trainer, name)
