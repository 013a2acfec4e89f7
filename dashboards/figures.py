"""Report figures (matplotlib, Agg): loss vs FLOPs per budget, speedup bars, final loss vs loops. PNG files."""

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from orchestrator import isoflops as iso  # noqa: E402
from orchestrator.comparison import Comparison, trial_curve  # noqa: E402
from orchestrator.sweep_data import SweepData  # noqa: E402

COLORS = {"loop": "tab:blue", "same_size": "tab:gray", "depth_matched": "tab:orange"}
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


def loss_vs_flops(data: SweepData, path: Path) -> Path:
    """One panel per budget: each variant's seed-mean envelope, with a band from the best to the worst seed."""
    budgets = sorted({t.budget for t in data.finished})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        by_label = defaultdict(list)
        for t in data.finished:
            if t.budget == budget:
                by_label[(t.variant, t.label)].append(iso.envelope(trial_curve(t)))
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
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="validation loss (nats/token, ELBO)",
               title=f"budget {budget:.3g} FLOPs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def speedup_bars(comparison: Comparison, path: Path) -> Path:
    """Speedup of each loop config over its baselines, per budget, with the seeds' bootstrap interval."""
    rows = [r for r in comparison.rows if r.variant == "loop"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4.0))
    width = 0.38
    for k, (attr, name) in enumerate((("vs_same_size", "vs same-size"), ("vs_depth_matched", "vs depth-matched"))):
        xs, means, errs = [], [], [[], []]
        for i, row in enumerate(rows):
            s = getattr(row, attr)
            if s is None or s.interval is None:
                continue
            xs.append(i + (k - 0.5) * width)
            means.append(s.interval.mean)
            errs[0].append(s.interval.mean - s.interval.low)
            errs[1].append(s.interval.high - s.interval.mean)
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=name,
               color=COLORS["same_size" if k == 0 else "depth_matched"])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), [f"{r.label}\n{r.budget:.2g}" for r in rows], fontsize=8)
    ax.set(ylabel="speedup (x fewer FLOPs to the baseline's final loss)", title="LoopMDM speedup (missing bar: not reached)")
    ax.legend(fontsize=8)
    return _save(fig, path)


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
