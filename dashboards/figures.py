"""Report figures (matplotlib, Agg): loss and accuracy vs FLOPs per budget, speedup bars, final loss vs loops.
PNG files."""

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from loopmdm_core import metrics  # noqa: E402
from orchestrator import isoflops as iso  # noqa: E402
from orchestrator.comparison import BASELINES, Comparison, trial_curve  # noqa: E402
from orchestrator.sweep_data import SweepData  # noqa: E402

COLORS = {"loop": "tab:blue", "same_size": "tab:gray", "depth_matched": "tab:orange"}
SERIES = {"same_size": "vs same-size", "depth_matched": "vs depth-matched"}
Y_LABELS = {metrics.VAL_LOSS: "validation loss (nats/token, ELBO)",
            metrics.VAL_ANSWER_LOSS: "answer loss (nats per answer token, ELBO)"}
STYLES = ["-", "--", ":", "-."]


def _finish(fig, ax, path: Path, **labels) -> Path:
    """Axis labels and title, a light grid and a small legend, then save: the common end of every figure."""
    ax.set(**labels)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_vs_flops(data: SweepData, metric: str, path: Path) -> Path:
    """One panel per budget: each variant's seed-mean envelope of the compared loss (`metric`), with a band from
    the best to the worst seed; the trials the comparisons use (no LR-ladder candidates)."""
    budgets = sorted({t.budget for t in data.compared})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        by_label = defaultdict(list)
        for t in data.compared:
            if t.budget == budget:
                by_label[(t.variant, t.label)].append(iso.envelope(trial_curve(t, metric)))
        seen = defaultdict(int)  # lines per variant so far: each gets its own dash style
        for (variant, label), curves in sorted(by_label.items()):
            lo = max(c.flops[0] for c in curves)
            hi = min(c.flops[-1] for c in curves)
            grid = np.geomspace(lo, hi, 50) if hi > lo else np.array([lo])
            ys = np.array([[iso.loss_at(c, x) for x in grid] for c in curves], dtype=float)
            style = STYLES[seen[variant] % len(STYLES)]
            seen[variant] += 1
            ax.plot(grid, ys.mean(0), style, color=COLORS.get(variant), label=f"{label} ({len(curves)} seeds)",
                    marker="o" if len(grid) == 1 else None)
            if len(curves) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=COLORS.get(variant), alpha=0.15)
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel=Y_LABELS[metric],
               title=f"budget {budget:.3g} FLOPs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def speedup_bars(comparison: Comparison, path: Path) -> Path:
    """Median speedup over seeds of each loop config over its baselines, per budget, with the bootstrap 95%
    interval (down to 0 where its low end is a seed that never reached the target). A cell whose median seed
    never reached the target is an empty hatched bar up to the interval's high end (1.0x if none reached), never a
    plain bar; every bar says how many seeds reached. The legend lists only the series that have bars."""
    rows = [r for r in comparison.rows if r.variant == "loop"]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(rows) + 2), 4.8))
    width = 0.38
    drawn, censored = set(), False
    for k, variant in enumerate(BASELINES):
        for i, row in enumerate(rows):
            versus = row.versus.get(variant)
            if versus is None:
                continue
            drawn.add(variant)
            censored |= _speedup_bar(ax, i + (k - 0.5) * width, width, versus.speedup, COLORS[variant])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the annotations above the tallest bar
    ax.set_xticks(range(len(rows)), [f"{r.label}\n{r.budget:.2g}" for r in rows], fontsize=8)
    ax.set(ylabel="speedup (x fewer FLOPs to the baseline's final loss)",
           title="speedup: median over seeds, bootstrap 95% interval")
    handles = [Patch(color=COLORS[v], label=SERIES[v]) for v in BASELINES if v in drawn]
    if censored:
        handles.append(Patch(fill=False, hatch="//", label="median seed: not reached"))
    if handles:  # below the axes: the annotations above the bars stay readable
        ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(handles))
    return _save(fig, path)


def _speedup_bar(ax, x: float, width: float, s: iso.CensoredMedian, color: str) -> bool:
    """One cell's bar and its annotation; True when it is censored (hatched)."""
    if s.median is None:
        top = 1.0 if s.high is None else s.high
        ax.bar(x, top, width, fill=False, hatch="//", edgecolor=color)
        ax.annotate(f"not reached\n{s.reached}/{s.seeds} reached", (x, top), ha="center", va="bottom", fontsize=7)
        return True
    # clamped: a percentile end can sit a rounding error on the wrong side of the median
    errors = None if s.seeds == 1 else [[max(0.0, s.median - (s.low or 0.0))], [max(0.0, s.high - s.median)]]
    ax.bar(x, s.median, width, yerr=errors, capsize=3, color=color)
    ax.annotate(f"{'≥' if s.lower_bound else ''}{s.median:.2f}x\n{s.reached}/{s.seeds} reached"
                + ("\n1 seed: no interval" if s.seeds == 1 else ""),
                (x, s.median if s.seeds == 1 else s.high), ha="center", va="bottom", fontsize=7)
    return False


def loss_vs_loops(comparison: Comparison, path: Path) -> Path:
    """Final validation loss against the number of loops (same-size = 1 loop), one line per loop range and budget."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    lines = defaultdict(dict)
    same = {r.budget: r.final_loss for r in comparison.rows if r.variant == "same_size"}
    for r in comparison.rows:
        if r.variant == "loop":
            lines[(r.loop, r.budget)][r.n_loops] = r.final_loss
    for (loop, budget), points in sorted(lines.items()):
        if budget in same:
            points = {1: same[budget], **points}
        ks = sorted(points)
        ax.errorbar(ks, [points[k].mean for k in ks], yerr=[[points[k].mean - points[k].low for k in ks],
                                                            [points[k].high - points[k].mean for k in ks]],
                    marker="o", capsize=3, label=f"loop {loop}, budget {budget:.2g}")
    return _finish(fig, ax, path, xlabel="n_loops (1 = same-size baseline)",
                   ylabel="final validation loss (nats/token)", title="final loss vs loops, at equal training FLOPs")


def loss_vs_inference_loops(comparison: Comparison, path: Path) -> Path:
    """Validation loss of the trained weights at each inference loop count (more loops = more compute)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for r in comparison.loop_scaling:
        ks = sorted(r["val_loss"])
        line, = ax.plot(ks, [r["val_loss"][k].mean for k in ks], marker="o", label=f"{r['label']} ({r['budget']:.2g})")
        if r["trained_loops"] in r["val_loss"]:
            ax.plot([r["trained_loops"]], [r["val_loss"][r["trained_loops"]].mean], "*", ms=14, color=line.get_color())
    return _finish(fig, ax, path, xlabel="n_loops at inference (star: trained)",
                   ylabel="validation loss (nats/token)", title="inference-time loop scaling")


def attention_shares(comparison: Comparison, path: Path) -> Path:
    """Mask->mask attention share per layer application (x: position in the unrolled stack)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    top = max(r["budget"] for r in comparison.attention)
    for r in comparison.attention:
        if r["budget"] != top:
            continue
        xs = range(len(r["share"]))
        line, = ax.plot(xs, [v.mean for v in r["share"]], marker="o", label=f"{r['label']} ({r['seeds']} seeds)")
        for x, name in zip(xs, r["layers"]):
            if "#" in name:
                ax.annotate(name, (x, r["share"][x].mean), fontsize=6, color=line.get_color())
    return _finish(fig, ax, path, xlabel="layer application (unrolled order)",
                   ylabel="attention share of masked queries on masked keys",
                   title=f"attention among masked positions, budget {top:.2g}")


def accuracy_vs_inference_flops(comparison: Comparison, path: Path) -> Path:
    """Task accuracy against forward FLOPs per answer at the largest budget: fixed loop counts as a line per
    variant, adaptive schedules as labelled points (up and left of the line = compute saved at equal quality)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    top = max(r["budget"] for r in comparison.task)
    by_label = defaultdict(list)
    for r in comparison.task:
        if r["budget"] == top:
            by_label[r["label"]].append(r)
    for label, rows in by_label.items():
        fixed = sorted((r for r in rows if r["schedule"].startswith("fixed:")), key=lambda r: r["flops_per_problem"])
        xs = [r["flops_per_problem"] / 1e9 for r in fixed]
        accs = [r["accuracy"] for r in fixed]
        errors = [[a.mean - a.low for a in accs], [a.high - a.mean for a in accs]]
        line = ax.errorbar(xs, [a.mean for a in accs], yerr=errors, marker="o", capsize=3,
                           label=f"{label}: fixed loops")[0]
        for r in rows:
            if not r["schedule"].startswith("fixed:"):
                x, y = r["flops_per_problem"] / 1e9, r["accuracy"].mean
                ax.plot([x], [y], "D", color=line.get_color())
                ax.annotate(r["schedule"], (x, y), fontsize=6, color=line.get_color())
    return _finish(fig, ax, path, xlabel="forward GFLOPs per answer", ylabel="exact-match accuracy (95% CI)",
                   title=f"task accuracy vs inference compute, budget {top:.2g}")


def accuracy_vs_flops(data: SweepData, path: Path) -> Path:
    """One panel per budget: each variant's seed-mean held-out accuracy (val/accuracy) against training FLOPs."""
    having = [t for t in data.compared if t.accuracy_curve]
    budgets = sorted({t.budget for t in having})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        by_label = defaultdict(list)
        for t in having:
            if t.budget == budget:
                by_label[(t.variant, t.label)].append(t)
        seen = defaultdict(int)
        for (variant, label), trials in sorted(by_label.items()):
            c = iso.mean_accuracy_curve(p for t in trials for p in t.accuracy_curve)
            ax.plot(c.flops, c.accuracy, STYLES[seen[variant] % len(STYLES)], color=COLORS.get(variant),
                    marker="o", ms=3, label=f"{label} ({len(trials)} seeds)")
            seen[variant] += 1
        ax.set(xscale="log", ylim=(0, 1), xlabel="training FLOPs", ylabel="held-out exact-match accuracy",
               title=f"budget {budget:.3g} FLOPs")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a range under a decade labels every minor tick: overlaps
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
