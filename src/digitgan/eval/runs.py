"""Several runs evaluated as one: each metric's median and range over the runs, as quality is
reported here (medians over seeds, with their range).

:func:`evaluate_runs` evaluates every run of a folder (the ``seed-N`` runs of
``digitgan train --seeds``, or any folder of runs) alike: the same number of samples, noise
seed, dataset and classifier for each. ``digitgan evaluate FOLDER`` calls it when FOLDER
holds runs rather than being one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..store.checkpoint import LATEST, SUFFIX, runs_in
from .evaluate import EvalReport, evaluate

QUALIFIERS = frozenset(
    {"kid_std", "is_std", "memorised_threshold", "memorised_quantile"}
    | {"cas_samples", "cas_real_samples"}
)
"""Metrics that qualify another (a spread, a threshold, a count): in :meth:`RunsReport.to_dict`,
not in its table."""

MAX_COLUMNS = 8
"""The most runs whose own values the table shows beside the median and range."""


@dataclass
class RunsReport:
    """The evaluations of several runs (``reports``, by run name, in order) of ``folder``."""

    folder: str
    reports: dict[str, EvalReport]

    def summary(self) -> dict[str, dict[str, float]]:
        """For every metric that each run has (in the first run's order): its median, min and
        max over the runs."""
        reports = list(self.reports.values())
        keys = [k for k in reports[0].metrics if all(k in r.metrics for r in reports)]
        summary = {}
        for key in keys:
            values = [r.metrics[key] for r in reports]
            summary[key] = {"median": statistics.median(values), "min": min(values)}
            summary[key]["max"] = max(values)
        return summary

    def to_dict(self) -> dict:
        runs = {name: r.to_dict() for name, r in self.reports.items()}
        return {"folder": self.folder, "summary": self.summary(), "runs": runs}

    def table(self) -> str:
        """A plain-text table: a row per metric, its median and range, and (up to
        :data:`MAX_COLUMNS` runs) each run's value."""
        first = next(iter(self.reports.values()))
        names = list(self.reports)
        shown = names if len(names) <= MAX_COLUMNS else []
        rows = [("metric", "median", "range", *shown)]
        for key, s in self.summary().items():
            if key in QUALIFIERS:
                continue
            lo, hi = _number(s["min"]), _number(s["max"])
            each = (_number(self.reports[name].metrics[key]) for name in shown)
            rows.append((key, _number(s["median"]), lo if lo == hi else f"{lo} - {hi}", *each))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        head = (
            f"{self.folder}: {len(names)} runs, {first.samples} samples each vs "
            f"{first.reference} of {first.dataset} ({first.classifier} features); the median "
            "and range over the runs"
        )
        lines = [head]
        for row in rows:  # the names left-aligned, the numbers right-aligned
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells))
        return "\n".join(lines)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def evaluate_runs(
    folder: str | Path, *, log: Callable[[str], None] | None = None, **options
) -> RunsReport:
    """Every run of ``folder`` (:func:`~digitgan.store.checkpoint.runs_in`) evaluated by
    :func:`~.evaluate.evaluate` with the same ``options`` (``n``, ``seed``, ``dataset``,
    ``cas``, ...); ``log`` is told which run is being evaluated."""
    runs = runs_in(folder)
    if not runs:
        raise CheckpointError(
            f"{folder}: holds no runs (folders with checkpoints/{LATEST}{SUFFIX})"
        )
    reports: dict[str, EvalReport] = {}
    for run in runs:
        if log:
            log(f"evaluating {run}")
        report = evaluate(run, log=log, **options)
        first = reports.get(runs[0].name, report)
        if report.dataset != first.dataset:
            raise ConfigError(
                f"{run}: scored on {report.dataset}, {runs[0]} on {first.dataset}; the runs "
                "of a folder are summarised on one dataset (evaluate these one by one, or "
                "give --dataset)"
            )
        reports[run.name] = report
    return RunsReport(str(folder), reports)
