"""The report's figures: a sweep's trials and its comparison turned into the plain data dashboards.figures draws
(seed means and bands, bars, points), and the PNGs written in the order the report shows them."""

from collections import defaultdict
from pathlib import Path

import numpy as np

from dashboards import figures
from dashboards.plot_data import (AttentionShares, Bar, Estimate, FinalLoss, InferenceLoops, ScheduleAccuracy,
                                  SeedLines, Series, SpeedupBars)
from loopmdm_core import metrics

from . import isoflops as iso
from .comparison import Comparison, trial_accuracy, trial_curve
from .sweep_data import SweepData

Y_LABELS = {metrics.VAL_LOSS: "validation loss (nats/token, ELBO)",
            metrics.VAL_ANSWER_LOSS: "answer loss (nats per answer token, ELBO)"}


def sweep_labels(data: SweepData) -> tuple[str, ...]:
    """Every variant label the comparisons use: each figure styles its variants among all of them, so that a
    variant has one colour in every figure."""
    return tuple(sorted({t.label for t in data.compared}))


def _by_cell(trials) -> dict[tuple[float, str], list]:
    """(budget, label) -> its trials over seeds."""
    out = defaultdict(list)
    for t in trials:
        out[(t.budget, t.label)].append(t)
    return out


def loss_series(data: SweepData, metric: str) -> list[Series]:
    """Per budget and variant: the seed mean of each seed's best loss so far on the FLOPs range all seeds span
    (50 points, log-spaced), and the band from the best to the worst seed."""
    out = []
    for (budget, label), trials in _by_cell(data.compared).items():
        curves = [iso.envelope(trial_curve(t, metric)) for t in trials]
        lo, hi = max(c.flops[0] for c in curves), min(c.flops[-1] for c in curves)
        grid = np.geomspace(lo, hi, 50) if hi > lo else np.array([lo])
        ys = np.array([[iso.loss_at(c, x) for x in grid] for c in curves], dtype=float)
        band = (ys.min(0), ys.max(0)) if len(curves) > 1 else (None, None)
        out.append(Series(label, budget, grid, ys.mean(0), len(curves), *band))
    return out


def _seed_band(curves: list[tuple[np.ndarray, np.ndarray]]):
    """(grid, mean, low, high) of per-seed curves (FLOPs, value) on the FLOPs range all seeds span: every seed's
    evaluation points in it, each seed interpolated linearly in log FLOPs (seeds of a sampled loop count evaluate
    at different FLOPs). None when the seeds share no range."""
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if hi < lo:
        return None
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    ys = np.array([np.interp(np.log(grid), np.log(x), y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def accuracy_series(data: SweepData) -> list[Series | SeedLines]:
    """Per budget and variant whose trials log held-out accuracy: the seed mean against training FLOPs and the
    band from the lowest to the highest seed, or each seed alone where they share no FLOPs range."""
    out = []
    for (budget, label), trials in _by_cell(t for t in data.compared if t.accuracy_curve).items():
        curves = [(c.flops, c.accuracy) for c in map(trial_accuracy, trials)]
        band = _seed_band(curves)
        if band is None:
            out.append(SeedLines(label, budget, tuple(curves)))
            continue
        grid, mean, low, high = band
        out.append(Series(label, budget, grid, mean, len(curves), *((low, high) if len(curves) > 1 else ())))
    return out


def _bar(s: iso.CensoredMedian) -> Bar:
    return Bar(s.median, s.low, s.high, s.reached, s.seeds, s.lower_bound)


def speedup_bars(comparison: Comparison) -> list[SpeedupBars]:
    return [SpeedupBars(r.label, r.budget, {variant: _bar(v.speedup) for variant, v in r.versus.items()
                                                    if v is not None})
            for r in comparison.rows if r.variant == "loop"]


def final_losses(comparison: Comparison) -> list[FinalLoss]:
    return [FinalLoss(r.label, r.variant, r.budget, r.n_loops,
                      Estimate(r.final_loss.mean, r.final_loss.low, r.final_loss.high)) for r in comparison.rows]


def inference_loops(comparison: Comparison) -> list[InferenceLoops]:
    return [InferenceLoops(r.label, r.budget, r.seeds, r.trained_loops, {k: v.mean for k, v in r.val_loss.items()})
            for r in comparison.loop_scaling]


def attention_shares(comparison: Comparison) -> list[AttentionShares]:
    return [AttentionShares(r.label, r.budget, r.seeds, tuple(r.layers), tuple(v.mean for v in r.share))
            for r in comparison.attention]


def schedule_accuracy(comparison: Comparison) -> list[ScheduleAccuracy]:
    return [ScheduleAccuracy(r.label, r.budget, r.schedule, r.fixed, r.flops_per_problem,
                             Estimate(r.accuracy.mean, r.accuracy.low, r.accuracy.high)) for r in comparison.task]


def write_figures(data: SweepData, comparison: Comparison, out: Path) -> list[Path]:
    """The PNGs in `out`, those the sweep has data for, in the report's order."""
    labels, y_label = sweep_labels(data), Y_LABELS[comparison.loss_metric]
    pngs = [figures.loss_vs_flops(loss_series(data, comparison.loss_metric), labels, y_label,
                                  out / "loss_vs_flops.png"),
            figures.speedup_bars(speedup_bars(comparison), out / "speedup_bars.png"),
            figures.loss_vs_loops(final_losses(comparison), labels, y_label, out / "loss_vs_loops.png")]
    if comparison.accuracy:
        pngs.append(figures.accuracy_vs_flops(accuracy_series(data), labels, out / "accuracy_vs_flops.png"))
    if comparison.loop_scaling:
        pngs.append(figures.loss_vs_inference_loops(inference_loops(comparison), labels,
                                                    out / "loss_vs_inference_loops.png"))
    if comparison.attention:
        pngs.append(figures.attention_shares(attention_shares(comparison), labels, out / "attention_shares.png"))
    if comparison.task:
        pngs.append(figures.accuracy_vs_inference_flops(schedule_accuracy(comparison), labels,
                                                        out / "accuracy_vs_inference_flops.png"))
    return pngs
