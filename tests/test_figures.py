"""The report's figures, read from their matplotlib objects (no MLflow, no Ray): plain tick labels, legends off the
data, integer loop axes, one panel per budget, readable layer labels, one colour per variant in every figure, seed
bands instead of vertical strokes; and dashboards/ as a leaf that draws plain data, importing nothing of the
project."""

import ast
import itertools
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dashboards import figures
from dashboards.plot_data import AttentionShares, SeedLines
from orchestrator import isoflops as iso
from orchestrator import report_figures
from orchestrator.comparison import Comparison, Row, Versus, compare
from orchestrator.sweep_data import SweepData, TrialRecord

BUDGETS = (1e12, 3e12)
SEEDS = (0, 1, 2)
# label: (variant, n_layers, loop_start, loop_end, n_loops, FLOPs shift over same-size)
VARIANTS = {
    "loop[0,2)x2": ("loop", 2, 0, 2, 2, 3.0),
    "loop[0,2)x2~uniform:1:3": ("loop", 2, 0, 2, 2, 1.5),
    "loop[0,2)x3": ("loop", 2, 0, 2, 3, 2.0),
    "same_size(2L)": ("same_size", 2, 0, 2, 1, 1.0),
    "depth_matched(4L)": ("depth_matched", 4, 0, 4, 1, 2.0),
    "depth_matched(6L)": ("depth_matched", 6, 0, 6, 1, 2.5),
}


def wide(flops, shift):
    """Loss from 1 down to 1e-4 over a decade of FLOPs: four decades of loss."""
    return (flops * shift / 1e11) ** -4.0


def narrow(flops, shift):
    """Loss between 5.3 and 6.0: a tiny model near the unigram plateau, less than a decade of loss."""
    return 5.3 + 0.7 * (flops * shift / 1e11) ** -0.3


def trial(label, budget, seed, loss):
    variant, layers, start, end, loops, shift = VARIANTS[label]
    # a sampled loop count spends a different amount per step: each seed evaluates at its own FLOPs
    jitter = 1.0 + 0.03 * seed if "~" in label else 1.0
    flops = np.linspace(budget / 10, budget, 10) * jitter
    flops = flops[flops <= budget * 1.05]
    applied = layers + (end - start) * (loops - 1)
    params = {"model.n_layers": layers, "model.loop_start": start, "model.loop_end": end, "model.n_loops": loops,
              "derived.params": 1000 * layers, "derived.flops_per_token": 100 * applied,
              "derived.applied_layers": applied, "train.lr": 1e-3, "eval.task_problems": 100}
    tags = {"loopmdm.variant": variant, "loopmdm.label": label, "loopmdm.seed": str(seed),
            "loopmdm.budget_flops": f"{budget:g}"}
    accuracy = np.clip(0.5 + 0.2 * np.log10(flops * shift * (1 + 0.05 * seed) / 1e12), 0, 1)
    task = {f"fixed:{k}": (0.1 * min(k, loops), k * 1e9) for k in range(1, 2 * loops + 1)}
    if loops > 1:
        task[f"ramp:{2 * loops}:1"] = (0.1 * loops, 1.5e9)
    return TrialRecord(f"{label}-{budget:g}-{seed}", f"{label}-{budget:g}-{seed}", "FINISHED", tags,
                       {k: str(v) for k, v in params.items()},
                       curve=list(zip(flops.tolist(), loss(flops, shift).tolist())),
                       accuracy_curve=list(zip(flops.tolist(), accuracy.tolist())),
                       loop_scaling={k: 0.05 + 0.01 * abs(k - loops) for k in range(1, 2 * loops + 1)},
                       attention=[0.5 + 0.01 * i for i in range(applied)], task=task, task_problems=100)


def sweep(loss=wide, budgets=BUDGETS, labels=tuple(VARIANTS)) -> SweepData:
    trials = [trial(label, b, s, loss) for b in budgets for s in SEEDS for label in labels]
    return SweepData("figures", "parent", "FINISHED", "memory", trials)


@pytest.fixture(scope="module")
def data():
    return sweep()


@pytest.fixture(scope="module")
def comparison(data):
    return compare(data)


def drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def tick_texts(axis, minor: bool = True):
    """The labels of the ticks in view, major then minor (matplotlib also keeps ticks just outside it)."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + (axis.get_minor_ticks() if minor else [])
    return [t.label1.get_text() for t in ticks if lo <= t.get_loc() <= hi and t.label1.get_text()]


def loss_figure(data):
    series = report_figures.loss_series(data, "val/loss")
    return figures.loss_vs_flops_figure(series, report_figures.sweep_labels(data), "validation loss")


def builders(data, comparison):
    """Each figure as the report builds it: the sweep and its comparison turned into plain data, then drawn."""
    labels, to = report_figures.sweep_labels(data), report_figures
    return {"loss_vs_flops": lambda: loss_figure(data),
            "speedup_bars": lambda: figures.speedup_bars_figure(to.speedup_bars(comparison)),
            "loss_vs_loops": lambda: figures.loss_vs_loops_figure(to.final_losses(comparison), labels, "loss"),
            "accuracy_vs_flops": lambda: figures.accuracy_vs_flops_figure(to.accuracy_series(data), labels),
            "loss_vs_inference_loops": lambda: figures.loss_vs_inference_loops_figure(to.inference_loops(comparison),
                                                                                       labels),
            "attention_shares": lambda: figures.attention_shares_figure(to.attention_shares(comparison), labels),
            "accuracy_vs_inference_flops": lambda: figures.accuracy_vs_inference_flops_figure(
                to.schedule_accuracy(comparison), labels)}


def test_dashboards_import_nothing_of_the_project():
    """dashboards/ is a leaf: it draws the plain data it is handed and knows no sweep, trial or comparison."""
    project = {"orchestrator", "loopmdm_core", "benchmarks"}
    for path in (Path(figures.__file__).parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not {n.split(".")[0] for n in names} & project, (path.name, names)


@pytest.mark.parametrize("loss", [wide, narrow])
def test_loss_axis_ticks_are_plain_decimals(loss):
    """No '5.3 × 10^0' on the log loss axis, minor ticks included: plain numbers, at least two in view, each the
    value of its tick; the FLOPs axis is compact (2e14), never mathtext."""
    fig = loss_figure(sweep(loss, budgets=(1e12,)))
    drawn(fig)
    ax = fig.axes[0]
    texts = tick_texts(ax.yaxis)
    assert len(texts) >= 2, texts
    for text in texts + tick_texts(ax.xaxis):
        assert "×" not in text and "10^" not in text and "$" not in text and "\\times" not in text, text
    for text in texts:
        assert "e" not in text, text  # plain decimals: 0.0001, not 1e-04
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.yaxis.get_majorticklocs() if lo <= t <= hi]
    assert [float(t) for t in texts] == pytest.approx(ticks, rel=1e-3)  # minor ticks unlabelled
    assert tick_texts(ax.xaxis) and all("e" in t for t in tick_texts(ax.xaxis))
    plt.close(fig)


def test_plain_formats_without_exponents():
    assert [figures.plain(x) for x in (1e-4, 0.25, 5.3, 0.30000000000000004, 12.0, 1e-5)] == \
        ["0.0001", "0.25", "5.3", "0.3", "12", "0.00001"]
    assert [figures.flops_text(x) for x in (2e14, 1.5e12, 3e13)] == ["2e14", "1.5e12", "3e13"]


def test_legends_lie_outside_every_axes(data, comparison):
    """Every figure's legend sits below its panels, under their tick labels and axis labels, inside the figure:
    it never covers a curve."""
    for name, build in builders(data, comparison).items():
        fig = build()
        renderer = drawn(fig)
        assert len(fig.legends) == 1, name
        box = fig.legends[0].get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), name
            assert box.y1 <= ax.get_tightbbox(renderer).y0 + 1, name  # below the axis label too
        assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width, name
        plt.close(fig)


def test_one_panel_per_budget(data, comparison):
    for name, build in builders(data, comparison).items():
        fig = build()
        assert len(fig.axes) == len(BUDGETS), name
        titles = [ax.get_title() for ax in fig.axes]
        assert "1e12" in titles[0] and "3e12" in titles[1], (name, titles)
        plt.close(fig)


def test_loss_vs_loops_has_integer_ticks_and_keeps_sampled_loops_apart(data, comparison):
    fig = builders(data, comparison)["loss_vs_loops"]()
    drawn(fig)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(t == int(t) for t in ticks)
    assert tick_texts(ax.xaxis) == [str(int(t)) for t in ticks]
    # the fixed and the sampled loop count (both 2 loops of [0,2)) are two points, each its own final loss
    points = {line.get_gid(): line.get_ydata()[0] for line in ax.lines if line.get_gid() in VARIANTS}
    finals = {r.label: r.final_loss.mean for r in comparison.rows if r.budget == 1e12}
    assert set(points) == set(finals) - {"depth_matched(4L)", "depth_matched(6L)"}
    assert points == pytest.approx({k: finals[k] for k in points})
    assert {line.get_gid() for line in ax.lines} >= {"loop[0,2) line", "loop[0,2)~uniform:1:3 line"}
    plt.close(fig)


def test_attention_has_a_panel_per_budget_and_readable_layer_labels(data, comparison):
    fig = builders(data, comparison)["attention_shares"]()
    renderer = drawn(fig)
    assert len(fig.axes) == len(BUDGETS)
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        # loop[0,2)x3 has the most layer applications: its names, each once, rotated, none overlapping
        assert [t.get_text() for t in labels] == ["L0#1", "L1#1", "L0#2", "L1#2", "L0#3", "L1#3"]
        assert all(t.get_rotation() == 45 for t in labels)
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    plt.close(fig)


def test_attention_labels_thin_out_on_a_deep_stack():
    rows = [AttentionShares("loop[1,21)x3", 1e12, 1, tuple(f"L{i % 20}#{i // 20 + 1}" for i in range(60)),
                            (0.5,) * 60)]
    fig = figures.attention_shares_figure(rows, ("loop[1,21)x3",))
    renderer = drawn(fig)
    labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert 2 <= len(labels) <= figures.MAX_X_LABELS
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    plt.close(fig)


def line_colors(fig) -> dict:
    """gid (a variant's label) -> colour of the lines drawn for it, over all panels."""
    out = {}
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid() in VARIANTS:
                out.setdefault(line.get_gid(), set()).add(line.get_color())
    return out


def test_a_variant_has_one_colour_in_every_figure(data, comparison):
    labels = report_figures.sweep_labels(data)
    assert set(labels) == {r.label for r in comparison.rows} == set(VARIANTS)
    want = {label: figures.style(label, labels).color for label in VARIANTS}
    seen = {}
    for name in ("loss_vs_flops", "accuracy_vs_flops", "loss_vs_inference_loops", "attention_shares",
                 "accuracy_vs_inference_flops", "loss_vs_loops"):
        fig = builders(data, comparison)[name]()
        for label, colors in line_colors(fig).items():
            assert colors == {want[label]}, (name, label, colors)
            seen.setdefault(label, set()).add(name)
        plt.close(fig)
    assert all(len(where) >= 5 for where in seen.values()), seen
    # families: same-size grey, depth-matched orange, loops in the blue/green/purple palette, all distinct
    assert want["same_size(2L)"] == figures.PALETTES["same_size"][0] == "#7f7f7f"
    assert {want["depth_matched(4L)"], want["depth_matched(6L)"]} <= set(figures.PALETTES["depth_matched"])
    assert want["depth_matched(4L)"] == "#ff7f0e"
    loops = [want[k] for k in VARIANTS if k.startswith("loop")]
    assert set(loops) <= set(figures.PALETTES["loop"]) and len(set(want.values())) == len(want)


def test_style_of_a_label():
    labels = ("loop[1,3)x2", "loop[1,3)x2~uniform:1:3", "loop[1,3)x3/bp2", "same_size(4L)", "depth_matched(6L)")
    assert figures.style("loop[1,3)x2~uniform:1:3", labels).linestyle == "--"  # a sampled loop count: dashed
    assert figures.style("loop[1,3)x3/bp2", labels).linestyle == "-."
    assert figures.style("loop[1,3)x2", labels).linestyle == "-"
    assert figures.style("same_size(4L)", labels).color == "#7f7f7f"
    assert figures.style("depth_matched(6L)", labels).color == "#ff7f0e"
    # a label's style depends on the sweep's labels only, not on which of them a figure happens to draw
    assert figures.style("loop[1,3)x3/bp2", labels) == figures.style("loop[1,3)x3/bp2", tuple(reversed(labels)))
    assert len({figures.style(x, labels).color for x in labels}) == len(labels)


def test_inference_loop_lines_have_distinct_colours(data, comparison):
    fig = builders(data, comparison)["loss_vs_inference_loops"]()
    for ax in fig.axes:
        colors = [line.get_color() for line in ax.lines if line.get_gid() in VARIANTS]
        assert len(colors) == len(VARIANTS) and len(set(colors)) == len(colors)
    plt.close(fig)


def test_accuracy_vs_flops_draws_a_seed_band_not_vertical_strokes(data):
    """Seeds of a sampled loop count evaluate at different FLOPs: the mean is one line over increasing FLOPs
    (no vertical jumps between seeds), the seeds' range a translucent band around it."""
    fig = builders(data, compare(data))["accuracy_vs_flops"]()
    for ax in fig.axes:
        line = next(line for line in ax.lines if line.get_gid() == "loop[0,2)x2~uniform:1:3")
        x, y = line.get_xdata(), line.get_ydata()
        assert len(x) > 5 and np.all(np.diff(x) > 0)
        band = next(c for c in ax.collections if c.get_gid() == "loop[0,2)x2~uniform:1:3 band")
        assert 0 < band.get_alpha() < 1
        vertices = band.get_paths()[0].vertices
        for xi, yi in zip(x, y):
            at = vertices[np.isclose(vertices[:, 0], xi, rtol=1e-9)][:, 1]
            assert at.min() - 1e-9 <= yi <= at.max() + 1e-9
    plt.close(fig)


def test_seeds_that_share_no_flops_range_are_drawn_each_alone():
    """No FLOPs range common to all seeds: no mean to draw, each seed a thin line of its own, the legend counting
    them."""
    late = [replace(t, accuracy_curve=[(c * 100, a) for c, a in t.accuracy_curve])
            for t in sweep(budgets=(1e12,), labels=("same_size(2L)",)).trials if t.seed == 1]
    early = [t for t in sweep(budgets=(1e12,), labels=("same_size(2L)",)).trials if t.seed == 0]
    (drawn_alone,) = report_figures.accuracy_series(SweepData("apart", "parent", "FINISHED", "memory", early + late))
    assert isinstance(drawn_alone, SeedLines) and drawn_alone.seeds == 2
    fig = figures.accuracy_vs_flops_figure([drawn_alone], ("same_size(2L)",))
    assert [line.get_gid() for line in fig.axes[0].lines] == ["same_size(2L) seed"] * 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["same_size(2L) (2 seeds)"]
    plt.close(fig)


def versus(median, reached, seeds, high=None):
    speedup = iso.CensoredMedian(median, median, high or median, reached, seeds, False)
    return Versus("base", speedup, 1.0, None, None)


def test_speedup_legend_lists_only_series_with_bars():
    row = lambda label, vs: Row(label, "loop", "[1,3)", 2, 1, 1, 1e12, iso.bootstrap([1.0]), vs)
    fig = figures.speedup_bars_figure(report_figures.speedup_bars(Comparison([
        row("a", {"depth_matched": versus(2.0, 2, 2)}),
        row("b", {"same_size": None, "depth_matched": versus(1.5, 2, 2)})])))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["vs depth-matched"]
    bars = [p for p in fig.axes[0].patches if p.get_height() > 0]
    assert len(bars) == 2 and {p.get_facecolor()[:3] for p in bars} == {(1.0, 127 / 255, 14 / 255)}
    plt.close(fig)
