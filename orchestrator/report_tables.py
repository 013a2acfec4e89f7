"""The report's tables as Sections of text: the speedup table, and in the order every output shows them the noise
verdicts, learning rates, held-out accuracy, iso-FLOPs, inference loops, attention, task accuracy and, last, the
extrapolations."""

from dataclasses import dataclass

from loopmdm_core import metrics

from . import isoflops as iso
from .comparison import BASELINES, NEWCOMBE, AccuracyRow, Comparison, Row, TaskRow, Versus
from .report_text import CAPTIONS, EXTRAPOLATIONS, NOTATION

HEADERS = ["variant", "loop", "loops", "params", "FLOPs/token", "budget", "final val loss",
           "speedup vs same-size", "speedup vs depth-matched"]
NOISE_HEADERS = ["variant", "budget", "baseline", "seeds", "baseline final loss ± std over seeds",
                 "loss difference (loop - baseline, paired) [95% t]", "loss verdict", "speedup verdict"]
ACCURACY_HEADERS = ["variant", "budget", "seeds", "final accuracy (pooled Wilson 95%)", "seed mean [95% t]",
                    "gap vs same-size (loop - same-size, paired)", "gap verdict",
                    "FLOPs to same-size's final accuracy (speedup)"]


@dataclass(frozen=True)
class Section:
    """One titled part of the report: lines of text, then an optional table; rendered to stdout, markdown and
    HTML alike so that the three never disagree."""
    title: str
    lines: list[str]
    headers: list[str] | None = None
    rows: list[list[str]] | None = None
    caption: str = ""  # what it shows and how to read it (CAPTIONS), before everything else
    footer: list[str] | None = None  # after the table: the notation of its cells


def headers(comparison: Comparison) -> list[str]:
    loss = "final answer loss" if comparison.loss_metric == metrics.VAL_ANSWER_LOSS else "final val loss"
    return [loss if h == "final val loss" else h for h in HEADERS]


def speedup_cell(row: Row, variant: str) -> str:
    if row.variant != "loop":
        return "-"
    versus = row.versus.get(variant)
    return versus.speedup.fmt() if versus else "n/a (no baseline)"


def table_rows(comparison: Comparison) -> list[list[str]]:
    return [[r.label, r.loop, str(r.n_loops), f"{r.params:,}", f"{r.flops_per_token:.3g}", f"{r.budget:.3g}",
             r.final_loss.fmt(4), speedup_cell(r, "same_size"), speedup_cell(r, "depth_matched")]
            for r in comparison.rows]


def baseline_pairs(comparison: Comparison):
    """(row, baseline variant, its Versus) for every looped config and each baseline the sweep has for it."""
    for r in comparison.rows:
        for variant in BASELINES:
            if r.versus.get(variant) is not None:
                yield r, variant, r.versus[variant]


def _signed(i: iso.Interval, digits: int) -> str:
    return f"{i.mean:+.{digits}f} [{i.low:+.{digits}f}, {i.high:+.{digits}f}]"


def _difference_cell(versus: Versus) -> str:
    d = versus.difference
    if d is None:
        return "n/a (the loop's curve does not reach the baseline's final FLOPs)"
    return _signed(d, 4) if d.n > 1 else f"{d.mean:+.4f} ({iso.ONE_SEED})"


def noise_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Per loop config and baseline: the baseline's seed-to-seed spread, the paired loss difference and the
    verdicts of it and of the speedup."""
    rows = []
    for r, _, v in baseline_pairs(comparison):
        spread = (f"{v.baseline_loss:.4f} ± {v.baseline_std:.4f}" if v.baseline_std is not None
                  else f"{v.baseline_loss:.4f} (1 seed: no spread)")
        rows.append([r.label, f"{r.budget:.3g}", v.baseline, str(v.speedup.seeds), spread, _difference_cell(v),
                     v.difference_verdict(), v.speedup.verdict()])
    return NOISE_HEADERS, rows


def iso_lines(comparison: Comparison) -> list[str]:
    return [f"{row.label} over budgets {', '.join(f'{b:.3g}' for b in row.budgets)} (finished schedules) "
            f"— vs same-size: {row.vs_same_size.fmt()} ({row.vs_same_size.verdict()}) — vs depth-matched: "
            f"{row.vs_depth_matched.fmt()} ({row.vs_depth_matched.verdict()})" for row in comparison.iso_rows]


def extrapolation_lines(comparison: Comparison) -> list[str]:
    return [f"EXTRAPOLATION (fit, not measured): {t.label} vs {t.baseline}: " +
            "; ".join(f"at {e.factor:g}x the largest budget: {e.fmt()}" for e in t.at)
            for t in comparison.extrapolations]


def learning_rate_section(comparison: Comparison) -> Section:
    lr = comparison.learning_rates
    if lr.budget is None:
        return Section("Learning rates", list(lr.lines), caption=CAPTIONS["learning_rates"])
    lrs = sorted({c.lr for c in lr.cells})
    cells = {(c.label, c.lr): c for c in lr.cells}
    rows = [[label] + [f"{cells[label, x].loss:.4f}{' (chosen)' if cells[label, x].chosen else ''}"
                       if (label, x) in cells else "-" for x in lrs]
            for label in sorted({c.label for c in lr.cells})]
    caption = (f"LR ladder: seed-mean final {comparison.loss_metric} at budget {lr.budget:.3g} for every learning "
               f"rate tried (the candidates are in no other table)")
    return Section("Learning rates", list(lr.lines) + [caption], ["variant"] + [f"lr {x:g}" for x in lrs], rows,
                   CAPTIONS["learning_rates"])


def _accuracy_gap_cell(r: AccuracyRow) -> str:
    if r.gap is None:
        return "-"
    if r.gap_method == iso.ONE_SEED:
        return f"{r.gap.mean:+.3f} ({iso.ONE_SEED})"
    return _signed(r.gap, 3) + (f" ({NEWCOMBE})" if r.gap_method == NEWCOMBE else "")


def accuracy_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Held-out exact-match accuracy at the end of training, and for loop configs the paired gap to the same-size
    baseline and the FLOPs they need to reach its final accuracy (running maximum of the accuracy curve)."""
    rows = []
    for r in comparison.accuracy:
        p, m = r.pooled, r.seed_mean
        pooled = "n/a (problem count not recorded)" if p is None else \
            f"{p.mean:.3f} [{p.low:.3f}, {p.high:.3f}] ({p.n} problems)"
        mean = f"{m.mean:.3f} [{m.low:.3f}, {m.high:.3f}]" if m.n > 1 else f"{m.mean:.3f} ({iso.ONE_SEED})"
        rows.append([r.label, f"{r.budget:.3g}", str(r.seeds), pooled, mean, _accuracy_gap_cell(r), r.gap_verdict(),
                     r.speedup.fmt() if r.speedup else "-"])
    return ACCURACY_HEADERS, rows


def loop_scaling_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Validation loss at each inference loop count (* marks the trained count), seed means."""
    ks = sorted({k for r in comparison.loop_scaling for k in r.val_loss})
    headers = ["variant", "budget", "seeds"] + [f"{k} loop{'s' if k > 1 else ''}" for k in ks]
    rows = [[r.label, f"{r.budget:.3g}", str(r.seeds)] +
            [f"{r.val_loss[k].mean:.4f}{'*' if k == r.trained_loops else ''}" if k in r.val_loss else "-"
             for k in ks] for r in comparison.loop_scaling]
    return headers, rows


def attention_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Share of masked queries' attention on masked keys, per layer application (L1#2: layer 1, 2nd loop)."""
    headers = ["variant", "budget", "seeds", "mask->mask share per layer application"]
    rows = [[r.label, f"{r.budget:.3g}", str(r.seeds),
             ", ".join(f"{name} {share.mean:.3f}" for name, share in zip(r.layers, r.share))]
            for r in comparison.attention]
    return headers, rows


def task_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Reasoning-task accuracy per loop schedule (95% Wilson interval over all seeds' problems), forward
    GFLOPs per answer, and for adaptive schedules the compute saved against the cheapest fixed loop count that
    is at least as accurate."""
    headers = ["variant", "budget", "seeds", "schedule", "accuracy [95% CI]", "GFLOPs/answer",
               "compute saved at equal accuracy"]

    def saved(r: TaskRow) -> str:
        if r.fixed:
            return ""
        return "no fixed count as accurate" if r.compute_saved is None else f"{100 * r.compute_saved:.0f}%"
    rows = [[r.label, f"{r.budget:.3g}", str(r.seeds), r.schedule, r.accuracy.fmt(3),
             f"{r.flops_per_problem / 1e9:.4f}", saved(r)] for r in comparison.task]
    return headers, rows


def speedup_section(comparison: Comparison) -> Section:
    """The main table: every variant at every budget, its final loss, a looped config's speedups."""
    return Section("Speedups", [], headers(comparison), table_rows(comparison), CAPTIONS["speedups"], NOTATION)


def sections(comparison: Comparison) -> list[Section]:
    """Everything after the main speedup table, in the order every output shows it; extrapolations last (the
    page puts them below the figures too: nothing fitted comes before what was measured)."""
    out = []
    noise_headers, noise_rows = noise_table(comparison)
    if noise_rows:
        out.append(Section("Is it above noise?", [], noise_headers, noise_rows, CAPTIONS["noise"]))
    out.append(learning_rate_section(comparison))
    if comparison.accuracy:
        out.append(Section("Held-out accuracy", [], *accuracy_table(comparison), CAPTIONS["accuracy"]))
    if comparison.iso_rows:
        out.append(Section("Iso-FLOPs (finished schedules)", iso_lines(comparison), caption=CAPTIONS["iso"]))
    if comparison.loop_scaling:
        out.append(Section("Validation loss vs inference loops", [], *loop_scaling_table(comparison),
                           CAPTIONS["loop_scaling"]))
    if comparison.attention:
        out.append(Section("Attention among masked positions", [], *attention_table(comparison),
                           CAPTIONS["attention"]))
    if comparison.task:
        out.append(Section("Reasoning-task accuracy vs inference compute", [], *task_table(comparison),
                           CAPTIONS["task"]))
    if comparison.extrapolations:
        out.append(Section(EXTRAPOLATIONS, extrapolation_lines(comparison), caption=CAPTIONS["extrapolations"]))
    return out
