"""Report figures (matplotlib, Agg): loss and accuracy vs FLOPs, speedup bars, final loss vs loops, inference loop
scaling, attention shares and task accuracy vs inference compute; one panel per training budget.

Each figure is built by a `*_figure` function that returns the matplotlib Figure (the tests read its axes) and
written by the function of the same name without the suffix. They draw plain data (plot_data), never read a sweep.
Every variant keeps one colour, dash and marker in every figure: style(label, labels), `labels` being all the
sweep's variant labels. Tick labels are plain numbers (no ×10^ mathtext), legends sit below the axes, never over
the data. A variant's lines carry its label as their gid (bands: "<label> band"), for the tests.
"""

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from .plot_data import (AttentionShares, Bar, FinalLoss, InferenceLoops, ScheduleAccuracy, SeedLines,  # noqa: E402
                        Series, SpeedupBars)

SERIES = {"same_size": "vs same-size", "depth_matched": "vs depth-matched"}  # the speedup bars' baselines, in order
# Colour families: same-size grey, depth-matched oranges, looped configs blues, greens and purples. Within a family
# the colours go to the sweep's labels in sorted order (style()).
PALETTES = {
    "same_size": ("#7f7f7f", "#3f3f3f", "#b5b5b5"),
    "depth_matched": ("#ff7f0e", "#a6540a", "#fdb863", "#d95f02", "#7f3b08"),
    "loop": ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#08306b", "#74c476", "#e377c2", "#00441b"),
}
MARKERS = {"same_size": "s", "depth_matched": "^", "loop": "o"}
COLORS = {family: palette[0] for family, palette in PALETTES.items()}  # a baseline series (speedup bars)
_LOOP = re.compile(r"loop\[(\d+),(\d+)\)x(\d+)(.*)")
_DEPTH = re.compile(r".*\((\d+)L\)")
MAX_X_LABELS = 12  # layer-application labels per panel (6 inches wide, rotated 45 degrees); more are thinned


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str
    marker: str


def family(label: str) -> str:
    """'same_size', 'depth_matched' or 'loop' (every other label) from a trial label."""
    for name in ("same_size", "depth_matched"):
        if label.startswith(name):
            return name
    return "loop"


def _order(label: str) -> tuple:
    """Sort key within a family: loop range, loop count, then the rest (fixed before sampled); baselines by
    depth."""
    m = _LOOP.fullmatch(label)
    if m:
        return int(m[1]), int(m[2]), int(m[3]), m[4], label
    d = _DEPTH.fullmatch(label)
    return int(d[1]) if d else 1 << 30, 0, 0, "", label


def sort_key(label: str) -> tuple:
    """Figures list variants as the tables do: looped configs, then same-size, then depth-matched."""
    return ("loop", "same_size", "depth_matched").index(family(label)), _order(label)


def style(label: str, labels=()) -> Style:
    """The colour, dash and marker of a variant in every figure of a report. Same-size is grey, depth-matched
    orange, looped configs blue, green, purple and so on; sampled loop counts (`~` in the label) are dashed,
    truncated backprop (`/bp`) dash-dotted. `labels`: all the sweep's labels (sweep_labels()); within a family the
    colours follow their sorted order, so two variants of one sweep share a colour only past the palette's size,
    and a label has the same style in every figure built from the same sweep."""
    kind = family(label)
    members = sorted({x for x in labels if family(x) == kind} | {label}, key=_order)
    palette = PALETTES[kind]
    dash = "--" if "~" in label else "-." if "/bp" in label else "-"
    return Style(palette[members.index(label) % len(palette)], dash, MARKERS[kind])


def plain(x: float) -> str:
    """A tick value in plain decimals, never in ×10^ notation: 0.0001, 0.25, 5.3, 12."""
    return "0" if x == 0 else np.format_float_positional(float(x), precision=4, unique=True, fractional=False,
                                                         trim="-")


def flops_text(x: float) -> str:
    """A FLOPs tick value, compact: 2e14, 3e13, 1.5e12."""
    if x <= 0:
        return "0"
    e = math.floor(math.log10(x) + 1e-9)
    return f"{x / 10 ** e:.2g}e{e}"


def _log_ticks(ax, which: str, fmt) -> None:
    """Ticks of a log axis ('x' or 'y') labelled by `fmt`, minor ones unlabelled: decades, else 1-2-5 or 1-2-3-5
    or every digit times a decade, the first of these with at least 3 ticks in view; under that, evenly spaced plain
    values (a narrow range holds no such value to label). Call it once the data is drawn: it reads the limits."""
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    axis = ax.xaxis if which == "x" else ax.yaxis
    ticks = []
    if lo > 0:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for subs in ((1,), (1, 2, 5), (1, 2, 3, 5), tuple(range(1, 10))):
            ticks = [s * 10.0 ** e for e in decades for s in subs if lo <= s * 10.0 ** e <= hi]
            if len(ticks) >= 3:
                break
    if len(ticks) < 3:
        ticks = [v for v in MaxNLocator(nbins=5).tick_values(lo, hi) if lo <= v <= hi and v > 0]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _panels(n: int, width: float = 5.5, height: float = 4.2, **kw):
    """A row of `n` panels in a constrained layout (room for a legend below them all)."""
    return plt.subplots(1, n, figsize=(width * n, height), squeeze=False, layout="constrained", **kw)


def _legend_below(fig: Figure, entries: dict) -> None:
    """One legend for the whole figure, below every panel: `entries` label -> handle."""
    if not entries:
        return
    column = 0.7 + 0.055 * max(len(label) for label in entries)  # inches: the handle and the longest label
    ncol = max(1, min(len(entries), int(fig.get_figwidth() // column)))
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=ncol, fontsize=8,
               frameon=False)


def _handle(s: Style, marker: bool = False) -> Line2D:
    return Line2D([], [], color=s.color, linestyle=s.linestyle, marker=s.marker if marker else None)


def _seeds(counts: set[int]) -> str:
    lo, hi = min(counts), max(counts)
    n = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{n} seed{'' if hi == 1 else 's'}"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _budgets(values) -> list[float]:
    return sorted(set(values))


def loss_vs_flops_figure(series: list[Series], labels, y_label: str) -> Figure:
    """One panel per budget: each variant's seed-mean loss curve, with a band from the best to the worst seed."""
    budgets = _budgets(r.budget for r in series)
    fig, axes = _panels(len(budgets))
    entries, seeds = {}, defaultdict(set)
    for ax, budget in zip(axes[0], budgets):
        for r in sorted((r for r in series if r.budget == budget), key=lambda r: sort_key(r.label)):
            s = style(r.label, labels)
            ax.plot(r.xs, r.ys, s.linestyle, color=s.color, marker=s.marker if len(r.xs) == 1 else None, gid=r.label)
            if r.low is not None:
                ax.fill_between(r.xs, r.low, r.high, color=s.color, alpha=0.15, lw=0, gid=f"{r.label} band")
            entries[r.label] = _handle(s)
            seeds[r.label].add(r.seeds)
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel=y_label,
               title=f"budget {flops_text(budget)} FLOPs")
        ax.grid(True, which="both", alpha=0.3)
        _log_ticks(ax, "x", flops_text)
        _log_ticks(ax, "y", plain)
    _legend_below(fig, {f"{label} ({_seeds(seeds[label])})": h for label, h in entries.items()})
    return fig


def loss_vs_flops(series: list[Series], labels, y_label: str, path: Path) -> Path:
    return _save(loss_vs_flops_figure(series, labels, y_label), path)


def speedup_bars_figure(configs: list[SpeedupBars]) -> Figure:
    """One panel per budget: the median speedup over seeds of each loop config over its baselines, with the
    bootstrap 95% interval (down to 0 where its low end is a seed that never reached the target). A cell whose
    median seed never reached the target is an empty hatched bar up to the interval's high end (1.0x if none
    reached), never a plain bar; every bar says how many seeds reached. The legend lists only the series that
    have bars."""
    budgets = _budgets(c.budget for c in configs) or [0.0]
    most = max([sum(c.budget == b for c in configs) for b in budgets] + [1])
    fig, axes = _panels(len(budgets), width=max(5.0, 1.8 * most + 1.5), height=4.8, sharey=True)
    width = 0.38
    drawn, censored = set(), False
    for ax, budget in zip(axes[0], budgets):
        here = [c for c in configs if c.budget == budget]
        for k, variant in enumerate(SERIES):
            for i, config in enumerate(here):
                bar = config.bars.get(variant)
                if bar is None:
                    continue
                drawn.add(variant)
                censored |= _speedup_bar(ax, i + (k - 0.5) * width, width, bar, COLORS[variant])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(here)), [c.label for c in here], fontsize=8)
        ax.set(title=f"budget {flops_text(budget)} FLOPs" if budget else "no loop config")
    top = max(ax.get_ylim()[1] for ax in axes[0])
    axes[0][0].set_ylim(0, top * 1.15)  # shared: room for the annotations above the tallest bar
    axes[0][0].set_ylabel("speedup (x fewer FLOPs to the baseline's final loss)")
    fig.suptitle("speedup: median over seeds, bootstrap 95% interval")
    handles = [Patch(color=COLORS[v], label=SERIES[v]) for v in SERIES if v in drawn]
    if censored:
        handles.append(Patch(fill=False, hatch="//", label="median seed: not reached"))
    _legend_below(fig, {h.get_label(): h for h in handles})
    return fig


def speedup_bars(configs: list[SpeedupBars], path: Path) -> Path:
    return _save(speedup_bars_figure(configs), path)


def _speedup_bar(ax, x: float, width: float, s: Bar, color: str) -> bool:
    """One cell's bar and its annotation; True when it is censored (hatched)."""
    if s.censored:
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


def loss_vs_loops_figure(points: list[FinalLoss], labels, y_label: str) -> Figure:
    """One panel per budget: final compared loss against the number of loops (same-size = 1 loop), one line per
    loop range and loop sampling, each point in its variant's colour."""
    budgets = _budgets(r.budget for r in points)
    fig, axes = _panels(len(budgets), height=4.0)
    entries = {}
    for ax, budget in zip(axes[0], budgets):
        here = [r for r in points if r.budget == budget]
        same = next((r for r in here if r.variant == "same_size"), None)
        lines = defaultdict(list)  # the label without its loop count: loop[1,3), loop[0,2)~uniform:1:3
        for r in here:
            if r.variant == "loop":
                lines[re.sub(r"x\d+", "", r.label, count=1)].append(r)
        for name in sorted(lines, key=lambda n: _order(lines[n][0].label)):
            line = sorted(lines[name], key=lambda r: r.n_loops)
            if same is not None:
                line = [same] + line
            s = style(line[-1].label if same is None else line[1].label, labels)
            ax.plot([r.n_loops for r in line], [r.loss.mean for r in line], s.linestyle, color=s.color,
                    alpha=0.6, gid=f"{name} line")
            for r in line:
                p = style(r.label, labels)
                ax.errorbar([r.n_loops], [r.loss.mean], yerr=[[r.loss.mean - r.loss.low], [r.loss.high - r.loss.mean]],
                            marker=p.marker, color=p.color, capsize=3, linestyle="none").lines[0].set_gid(r.label)
                entries[r.label] = _handle(p, marker=True)
        if not lines:
            ax.text(0.5, 0.5, "no looped config at this budget", transform=ax.transAxes, ha="center")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="n_loops (1 = the same-size baseline)", ylabel=f"final {y_label}",
               title=f"budget {flops_text(budget)} FLOPs: final loss vs loops")
        ax.grid(True, alpha=0.3)
    _legend_below(fig, {label: entries[label] for label in sorted(entries, key=sort_key)})
    return fig


def loss_vs_loops(points: list[FinalLoss], labels, y_label: str, path: Path) -> Path:
    return _save(loss_vs_loops_figure(points, labels, y_label), path)


def loss_vs_inference_loops_figure(rows: list[InferenceLoops], labels) -> Figure:
    """One panel per budget: validation loss of the trained weights at each inference loop count (more loops =
    more compute), a star at the trained count."""
    budgets = _budgets(r.budget for r in rows)
    fig, axes = _panels(len(budgets), height=4.0)
    entries = {}
    for ax, budget in zip(axes[0], budgets):
        for r in sorted((r for r in rows if r.budget == budget), key=lambda r: sort_key(r.label)):
            s = style(r.label, labels)
            ks = sorted(r.loss)
            ax.plot(ks, [r.loss[k] for k in ks], s.linestyle, color=s.color, marker=s.marker, ms=5, gid=r.label)
            if r.trained_loops in r.loss:
                ax.plot([r.trained_loops], [r.loss[r.trained_loops]], "*", ms=15, color=s.color,
                        markeredgecolor="black", markeredgewidth=0.5, gid=f"{r.label} trained")
            entries[f"{r.label} ({_seeds({r.seeds})})"] = _handle(s, marker=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="n_loops at inference (star: the trained count)", ylabel="validation loss (nats/token)",
               title=f"budget {flops_text(budget)} FLOPs: inference-time loop scaling")
        ax.grid(True, alpha=0.3)
    _legend_below(fig, entries)
    return fig


def loss_vs_inference_loops(rows: list[InferenceLoops], labels, path: Path) -> Path:
    return _save(loss_vs_inference_loops_figure(rows, labels), path)


def attention_shares_figure(shares: list[AttentionShares], labels) -> Figure:
    """One panel per budget: the mask->mask attention share per layer application (x: position in the unrolled
    stack), ticks named after the variant with the most applications (looped first), rotated and thinned."""
    budgets = _budgets(r.budget for r in shares)
    fig, axes = _panels(len(budgets), width=6.0, height=4.4, sharey=True)
    entries = {}
    for ax, budget in zip(axes[0], budgets):
        rows = sorted((r for r in shares if r.budget == budget), key=lambda r: sort_key(r.label))
        for r in rows:
            s = style(r.label, labels)
            ax.plot(range(len(r.shares)), list(r.shares), s.linestyle, color=s.color, marker=s.marker, ms=5,
                    gid=r.label)
            entries[f"{r.label} ({_seeds({r.seeds})})"] = _handle(s, marker=True)
        names = max(rows, key=lambda r: (len(r.layers), family(r.label) == "loop"))
        step = math.ceil(len(names.layers) / MAX_X_LABELS)
        ticks = list(range(0, len(names.layers), step))
        ax.set_xticks(ticks, [names.layers[i] for i in ticks], rotation=45, ha="right", fontsize=8)
        ax.set(xlabel=f"layer application in unrolled order (names: {names.label})",
               ylabel="attention share of masked queries on masked keys",
               title=f"budget {flops_text(budget)} FLOPs: attention among masked positions")
        ax.grid(True, alpha=0.3)
    _legend_below(fig, entries)
    return fig


def attention_shares(shares: list[AttentionShares], labels, path: Path) -> Path:
    return _save(attention_shares_figure(shares, labels), path)


def accuracy_vs_inference_flops_figure(points: list[ScheduleAccuracy], labels) -> Figure:
    """One panel per budget: task accuracy against forward FLOPs per answer, fixed loop counts as a line per
    variant, adaptive schedules as labelled diamonds (up and left of the line = compute saved at equal
    quality)."""
    budgets = _budgets(r.budget for r in points)
    fig, axes = _panels(len(budgets), width=6.5, height=4.4, sharey=True)
    entries = {}
    for ax, budget in zip(axes[0], budgets):
        by_label = defaultdict(list)
        for r in points:
            if r.budget == budget:
                by_label[r.label].append(r)
        for label in sorted(by_label, key=sort_key):
            rows, s = by_label[label], style(label, labels)
            fixed = sorted((r for r in rows if r.fixed), key=lambda r: r.flops_per_answer)
            accs = [r.accuracy for r in fixed]
            ax.errorbar([r.flops_per_answer / 1e9 for r in fixed], [a.mean for a in accs],
                        yerr=[[a.mean - a.low for a in accs], [a.high - a.mean for a in accs]], marker=s.marker,
                        color=s.color, linestyle=s.linestyle, capsize=3).lines[0].set_gid(label)
            entries[f"{label}: fixed loops"] = _handle(s, marker=True)
            for r in rows:
                if not r.fixed:
                    x, y = r.flops_per_answer / 1e9, r.accuracy.mean
                    ax.plot([x], [y], "D", color=s.color, markeredgecolor="black", markeredgewidth=0.5)
                    ax.annotate(r.schedule, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                                color=s.color)
        ax.set(xlabel="forward GFLOPs per answer", ylabel="exact-match accuracy (95% Wilson interval)",
               title=f"budget {flops_text(budget)} FLOPs: task accuracy vs inference compute")
        ax.grid(True, alpha=0.3)
    if any(not r.fixed for r in points):
        entries["adaptive schedule"] = Line2D([], [], color="black", marker="D", linestyle="none")
    _legend_below(fig, entries)
    return fig


def accuracy_vs_inference_flops(points: list[ScheduleAccuracy], labels, path: Path) -> Path:
    return _save(accuracy_vs_inference_flops_figure(points, labels), path)


def accuracy_vs_flops_figure(series: list[Series | SeedLines], labels) -> Figure:
    """One panel per budget: each variant's held-out accuracy against training FLOPs, the seed mean as a line and
    the range from the lowest to the highest seed as a translucent band; seeds that share no FLOPs range each
    alone, thin."""
    budgets = _budgets(r.budget for r in series)
    fig, axes = _panels(len(budgets))
    entries, seeds = {}, defaultdict(set)
    for ax, budget in zip(axes[0], budgets):
        for r in sorted((r for r in series if r.budget == budget), key=lambda r: sort_key(r.label)):
            s = style(r.label, labels)
            if isinstance(r, SeedLines):
                for x, y in r.lines:
                    ax.plot(x, y, s.linestyle, color=s.color, lw=0.8, alpha=0.7, gid=f"{r.label} seed")
            else:
                ax.plot(r.xs, r.ys, s.linestyle, color=s.color, marker=s.marker, ms=3, gid=r.label)
                if r.low is not None:
                    ax.fill_between(r.xs, r.low, r.high, color=s.color, alpha=0.15, lw=0, gid=f"{r.label} band")
            entries[r.label] = _handle(s)
            seeds[r.label].add(r.seeds)
        ax.set(xscale="log", ylim=(0, 1), xlabel="training FLOPs", ylabel="held-out exact-match accuracy",
               title=f"budget {flops_text(budget)} FLOPs")
        ax.grid(True, which="both", alpha=0.3)
        _log_ticks(ax, "x", flops_text)
    _legend_below(fig, {f"{label} ({_seeds(seeds[label])})": h for label, h in entries.items()})
    return fig


def accuracy_vs_flops(series: list[Series | SeedLines], labels, path: Path) -> Path:
    return _save(accuracy_vs_flops_figure(series, labels), path)
