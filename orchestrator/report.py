"""python orchestrator/report.py [--experiment NAME] [--tracking-uri URI] [--sweep-run ID] [--out DIR]

Speedup tables and iso-FLOPs curves of a sweep, built only from what MLflow holds: a markdown table on stdout,
the same as CSV and JSON, PNG figures and a self-contained HTML dashboard, all also logged as artifacts of the
sweep's parent run (folder `report/`). Default: the latest sweep in the default store. On top, a summary: how many
comparisons exceed the seed-to-seed noise and the sweep's scale. Beside every speedup: whether it stands above seed
noise; held-out accuracy when the trials log it; the learning rates each variant used; power-law extrapolations only
where their fits and seed intervals allow, labelled as such, below everything measured. Every table and figure says
what it shows and how to read it (CAPTIONS, NOTATION: the same texts on the page, in speedups.md and on stdout).
"""

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `orchestrator` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loopmdm_core import metrics  # noqa: E402
from loopmdm_core.errors import LoopMDMError  # noqa: E402
from orchestrator import isoflops as iso  # noqa: E402
from orchestrator import tracking  # noqa: E402
from orchestrator.comparison import (BASELINES, LOSS_NAMES, NEWCOMBE, AccuracyRow, Comparison, Row,  # noqa: E402
                                     Versus, compare)
from orchestrator.sweep_data import SweepData, load  # noqa: E402

HEADERS = ["variant", "loop", "loops", "params", "FLOPs/token", "budget", "final val loss",
           "speedup vs same-size", "speedup vs depth-matched"]
NOISE_HEADERS = ["variant", "budget", "baseline", "seeds", "baseline final loss ± std over seeds",
                 "loss difference (loop - baseline, paired) [95% t]", "loss verdict", "speedup verdict"]
ACCURACY_HEADERS = ["variant", "budget", "seeds", "final accuracy (pooled Wilson 95%)", "seed mean [95% t]",
                    "gap vs same-size (loop - same-size, paired)", "gap verdict",
                    "FLOPs to same-size's final accuracy (speedup)"]
INTERVALS = ("intervals: a speedup is the median over seeds (a seed that never reaches the target ranks below every "
             "reached value) with a percentile bootstrap 95% interval over seeds; a paired difference (loop minus "
             "baseline, same seed) has a Student t 95% interval over seeds")

# What each table and figure shows and how to read it: one place for the HTML page, speedups.md and stdout.
CAPTIONS = {
    "speedups": "Each looped config against its two baselines at the same training budget: same-size runs the same "
                "layers (the same parameters) once each; depth-matched has as many distinct layers as the loop "
                "applies (at the mean loop count when it is sampled): the same FLOPs per token, more parameters. "
                "Losses are seed means with a bootstrap 95% interval over seeds; the speedup cells read as listed "
                "under the table.",
    "noise": "Whether each difference stands above the seed-to-seed noise. Per looped config and baseline: the "
             "baseline's final loss ± its standard deviation over seeds, the loss difference at the baseline's final "
             "FLOPs (loop minus baseline, same seed; negative = the looped config is better) with a Student t 95% "
             "interval, and two verdicts. A verdict reads 'no detectable difference' when its 95% interval includes "
             "0 (loss) or 1.0x (speedup); a speedup interval end that is 'not reached' counts as below 1.0x.",
    "learning_rates": "Which learning rate each variant trained with. With an LR ladder: every rate tried at the "
                      "smallest budget with its seed-mean final loss, '(chosen)' marking the one the variant then "
                      "used.",
    "accuracy": "Exact-match accuracy on held-out problems at the end of training: pooled over all seeds' problems "
                "(Wilson 95% interval) and as a mean over seeds (t interval). For looped configs: the gap to "
                "same-size (loop minus same-size, same seed; positive = more accurate) with its verdict, and how "
                "many times fewer FLOPs the looped config needs to reach same-size's final accuracy (read like a "
                "speedup). '(1 seed: sampling noise only)': the interval covers the finite problem set, not "
                "seed-to-seed spread.",
    "iso": "Speedups across budgets: each variant's curve through its final (finished-schedule) losses at every "
           "budget rather than one run's training curve; the same notation and verdicts as the speedup table.",
    "loop_scaling": "Validation loss of the trained weights run with another number of loops at inference (seed "
                    "means; a baseline repeats its whole stack). * marks the loop count the model was trained with; "
                    "a lower loss right of * means extra inference loops help.",
    "attention": "Share of the attention of masked query positions that goes to masked key positions, per layer "
                 "application in unrolled order (L1#2: layer 1 on its 2nd loop), seed means. Higher: masked "
                 "positions attend more to each other than to the visible tokens.",
    "task": "Reasoning-task accuracy per inference loop schedule (fixed:k runs k loops; the other schedules choose "
            "the loop count as they go), pooled over seeds with a Wilson 95% interval, and the forward FLOPs one "
            "answer costs. For adaptive schedules: the compute saved against the cheapest fixed loop count that is "
            "at least as accurate.",
    "extrapolations": "Power-law fits L(C) = E + A·C^-α of the seed-mean loss curves at the largest budget, "
                      "projected to 10x and 100x that budget: a fit, not a measurement. A value is shown only with a "
                      "bootstrap interval over seeds and when both fits pass the quality gate (at least 4 points, R² "
                      "≥ 0.95 in log loss, a sane exponent, an interval narrower than 10x); otherwise the reason it "
                      "is withheld.",
    "figures": "Each variant keeps one colour in every figure: same-size grey, depth-matched orange, looped configs "
               "blue, green, purple; a dashed line is a sampled loop count.",
    "loss_vs_flops": "The compared loss against training FLOPs, one panel per budget: each line is a variant's seed "
                     "mean (of each seed's best loss so far), the band spans its best to its worst seed. Lower at "
                     "the same FLOPs is better; at a given loss, the horizontal distance between two lines is the "
                     "speedup.",
    "speedup_bars": "The speedup table as bars, one panel per budget: the median speedup over seeds with its "
                    "bootstrap 95% interval; above the line at 1.0x the looped config needs fewer FLOPs than the "
                    "baseline. A hatched empty bar: the median seed never reached the target (drawn up to the "
                    "interval's high end); each bar says how many seeds reached it.",
    "loss_vs_loops": "Final loss at the same training budget against the loop count, one panel per budget: 1 is the "
                     "same-size baseline, a line joins it to the looped configs of one loop range (a sampled loop "
                     "count sits at its mean, dashed); error bars are bootstrap 95% intervals over seeds.",
    "accuracy_vs_flops": "Held-out exact-match accuracy against training FLOPs, one panel per budget: the line is "
                         "the mean over seeds, the band spans the lowest to the highest seed (seeds of a sampled "
                         "loop count are interpolated to common FLOPs).",
    "loss_vs_inference_loops": "The validation loss at each inference loop count as lines, one panel per budget; the "
                               "star marks the loop count each model was trained with.",
    "attention_shares": "The mask-to-mask attention share per layer application in unrolled order, one panel per "
                        "budget; the tick names are those of the variant with the most layer applications, the "
                        "others are drawn at their own positions.",
    "accuracy_vs_inference_flops": "Task accuracy against forward GFLOPs per answer, one panel per budget: a line "
                                   "per variant through its fixed loop counts (Wilson 95% intervals), diamonds for "
                                   "adaptive schedules; a point above and left of a line reaches that accuracy with "
                                   "less compute.",
}
FIGURE_TITLES = {
    "loss_vs_flops": "Loss vs training FLOPs",
    "speedup_bars": "Speedups",
    "loss_vs_loops": "Final loss vs loop count",
    "accuracy_vs_flops": "Held-out accuracy vs training FLOPs",
    "loss_vs_inference_loops": "Loss vs inference loops",
    "attention_shares": "Attention shares per layer",
    "accuracy_vs_inference_flops": "Task accuracy vs inference compute",
}
# How to read a speedup cell: under the speedup table.
NOTATION = [
    "speedup: how many times fewer training FLOPs the looped config needs than the baseline to reach the baseline's "
    "final loss (baseline FLOPs / looped FLOPs, same budget and seed), read off the looped config's loss-vs-FLOPs "
    "curve, never extrapolated; above 1.00x the looped config is cheaper, below it dearer.",
    "2.00x [1.50, 3.00]: the median over seeds and its bootstrap 95% interval.",
    "reached k/n seeds: in k of the n seeds the looped config's curve got down to the target within its budget.",
    "not reached: the curve never got down to the target within its budget; such a seed ranks below every reached "
    "value. 'not reached (median)': at least half the seeds did not reach it; as an interval end: the interval "
    "extends below every speedup measured.",
    "≥: the looped config already beat the target at its first evaluation, so the speedup is at least the value "
    "shown.",
    "(1 seed: no interval): a single seed, so there is no seed-to-seed spread to judge a difference against.",
    "n/a (no baseline): the sweep has no such baseline for this config; '-': not a looped config.",
]
EXTRAPOLATIONS = "Extrapolations (fit, not measured)"
COUNTED = ("loss difference", "held-out accuracy gap")  # the verdicts the summary counts (noise_summary)
DIRECTIONAL = {"faster", "slower", "lower loss", "higher loss", "higher accuracy", "lower accuracy"}


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


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def provenance(data: SweepData, comparison: Comparison) -> list[str]:
    """What the numbers rest on: the sweep, the runs used, the runs left out and why, the loss compared."""
    used = f"runs used: {comparison.trials_used} finished trials of {len(data.trials)}"
    if comparison.candidates_left_out:
        used += (f" ({comparison.candidates_left_out} LR-ladder candidates are in no comparison, only under "
                 f"Learning rates)")
    lines = [f"sweep: experiment {data.experiment!r}, parent run {data.parent_run_id} ({data.tracking_uri})", used,
             f"loss compared: {LOSS_NAMES[comparison.loss_metric]}", INTERVALS]
    if data.parent_status == "RUNNING":
        lines.append("the sweep is still running: this report covers the trials finished so far")
    for t in data.not_finished:
        why = f": {t.error.splitlines()[-1]}" if t.error else ""
        lines.append(f"left out: {t.name} ({t.status}{why})")
    return lines


@dataclass(frozen=True)
class Verdicts:
    """One comparison: a looped config against one baseline at one budget, and each of its verdicts."""
    label: str
    baseline: str
    budget: float
    seeds: int
    verdicts: dict  # what was compared -> its verdict

    @property
    def exceeds(self) -> bool:
        """A Student t 95% interval over seeds (2 or more) of a COUNTED quantity excludes 0."""
        return self.seeds > 1 and any(self.verdicts.get(k) in DIRECTIONAL for k in COUNTED)

    @property
    def speedup_differs(self) -> bool:
        return self.seeds > 1 and self.verdicts["speedup"] in DIRECTIONAL

    def describe(self) -> str:
        found = ", ".join(self.verdicts[k] for k in COUNTED if self.verdicts.get(k) in DIRECTIONAL)
        return (f"{self.label} vs {self.baseline} at budget {self.budget:.3g} ({found}; speedup: "
                f"{self.verdicts['speedup']})")

    def as_dict(self) -> dict:
        return {"label": self.label, "baseline": self.baseline, "budget": self.budget, "seeds": self.seeds,
                "verdicts": dict(self.verdicts), "exceeds_seed_noise": self.exceeds}


def comparisons(comparison: Comparison) -> list[Verdicts]:
    """Every looped config against each of its baselines at each budget: the verdicts of its paired loss
    difference and its speedup, and against same-size that of its held-out accuracy gap (when logged)."""
    accuracy = {(a.label, a.budget): a for a in comparison.accuracy}
    out = []
    for r, variant, v in baseline_pairs(comparison):
        verdicts = {"loss difference": v.difference_verdict(), "speedup": v.speedup.verdict()}
        a = accuracy.get((r.label, r.budget))
        if variant == "same_size" and a is not None and a.gap is not None:
            verdicts["held-out accuracy gap"] = a.gap_verdict()
        out.append(Verdicts(r.label, v.baseline, r.budget, v.speedup.seeds, verdicts))
    return out


def baseline_pairs(comparison: Comparison):
    """(row, baseline variant, its Versus) for every looped config and each baseline the sweep has for it."""
    for r in comparison.rows:
        for variant in BASELINES:
            if r.versus.get(variant) is not None:
                yield r, variant, r.versus[variant]


def noise_summary(comparison: Comparison) -> tuple[list[str], dict]:
    """The page's first lines: how many comparisons exceed the seed-to-seed noise, which, and what counts. Counted:
    the paired differences with a Student t interval over seeds (loss, held-out accuracy). Not counted: the
    speedup's bootstrap interval, which never reaches past the seeds' own range (with 2 seeds it is that range),
    so that with few seeds it excludes 1.0x far more often than 5% of the time when nothing differs."""
    found = comparisons(comparison)
    judged = [c for c in found if c.seeds > 1]
    over = [c for c in judged if c.exceeds]
    if not found:
        text = "No looped config has a baseline in this sweep: there is nothing to compare."
    elif over:
        rest = len(judged) - len(over)
        text = (f"{len(over)} of {len(found)} comparisons exceed{'s' if len(over) == 1 else ''} the seed-to-seed "
                f"noise: "
                + "; ".join(c.describe() for c in over) + "."
                + (f" The other {rest} show no detectable difference." if rest else ""))
    elif judged:
        text = ("No comparison exceeds the seed-to-seed noise: at this scale the sweep shows no detectable "
                f"difference ({len(judged)} of {len(found)} comparisons have a 95% interval over seeds, and each "
                f"includes no difference).")
    else:
        text = ("No comparison can be judged against the seed-to-seed noise: each rests on 1 seed, so none has an "
                "interval.")
    one = len(found) - len(judged)
    if one and judged:
        text += f" {one} of {len(found)} rest on 1 seed (no interval) and are not judged."
    lines = [text]
    if found:
        accuracy = " (or, against same-size, of its held-out accuracy gap)" if comparison.accuracy else ""
        speedups = [c for c in judged if c.speedup_differs and not c.exceeds]
        lines.append(f"A comparison is one looped config against one baseline at one budget; it exceeds the noise "
                     f"when the Student t 95% interval over seeds of its paired loss difference{accuracy} excludes 0. "
                     f"Speedup verdicts are not counted: a bootstrap interval over few seeds never reaches past the "
                     f"seeds' own range (with 2 seeds it is that range)"
                     + (f"; {len(speedups)} more comparison{'s' if len(speedups) > 1 else ''} ha"
                        f"{'ve' if len(speedups) > 1 else 's'} a speedup interval that excludes 1.0x"
                        if speedups else "") + ". The table 'Is it above noise?' lists every verdict.")
    return lines, {"comparisons": len(found), "exceed_seed_noise": len(over), "one_seed": one,
                   "counted": list(COUNTED), "each": [c.as_dict() for c in found]}


def scale(data: SweepData) -> tuple[str, dict]:
    """The sweep's size: trials, variants, budgets, seeds, model sizes and the training FLOPs all its runs used."""
    trials = data.compared
    budgets = sorted({t.budget for t in trials})
    params = sorted({p for t in trials if (p := t.param("derived.params"))})
    per_token = sorted({f for t in trials if (f := t.param("derived.flops_per_token"))})
    logged = [t for t in data.trials if t.curve]
    total = sum(max(c for c, _ in t.curve) for t in logged)
    n_variants, n_seeds = len({t.label for t in trials}), len({t.seed for t in trials})

    def span(values, fmt):
        return "not recorded" if not values else fmt(values[0]) if len(values) == 1 else \
            f"{fmt(values[0])} to {fmt(values[-1])}"
    extra = []
    if len(data.finished) > len(trials):
        extra.append(f"{len(data.finished) - len(trials)} LR-ladder candidates")
    if data.not_finished:
        extra.append(f"{len(data.not_finished)} run{'s' if len(data.not_finished) > 1 else ''} that did not finish")
    text = (f"scale: {len(trials)} trials compared: {n_variants} variants, {len(budgets)} "
            f"budget{'s' if len(budgets) > 1 else ''} ({', '.join(f'{b:.3g}' for b in budgets)} training FLOPs), "
            f"{n_seeds} seed{'s' if n_seeds > 1 else ''}; models of {span(params, lambda v: f'{v:,}')} parameters "
            f"and {span(per_token, lambda v: f'{v:.3g}')} FLOPs per token; {total:.3g} training FLOPs in all ("
            f"{len(logged)} runs, each to its last evaluation" + (f"; {' and '.join(extra)} included" if extra else "")
            + ")")
    return text, {"trials_compared": len(trials), "variants": n_variants, "budgets": budgets, "seeds": n_seeds,
                  "params": [params[0], params[-1]] if params else None,
                  "flops_per_token": [per_token[0], per_token[-1]] if per_token else None,
                  "total_training_flops": total, "runs_with_flops": len(logged)}


def summary(data: SweepData, comparison: Comparison) -> tuple[Section, dict]:
    """The top of the report: whether its differences exceed the seed spread, the sweep's scale, the loss compared
    and, while it runs, that the sweep is not finished."""
    noise, noise_json = noise_summary(comparison)
    size, size_json = scale(data)
    lines = noise + [size, f"loss compared: {LOSS_NAMES[comparison.loss_metric]}"]
    if data.parent_status == "RUNNING":
        lines.append("the sweep is still running: this report covers the trials finished so far")
    return Section("Summary", lines), {"noise": noise_json, "scale": size_json, "lines": lines}


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
    return [f"{row['label']} over budgets {', '.join(f'{b:.3g}' for b in row['budgets'])} (finished schedules) "
            f"— vs same-size: {row['vs_same_size'].fmt()} ({row['vs_same_size'].verdict()}) — vs depth-matched: "
            f"{row['vs_depth_matched'].fmt()} ({row['vs_depth_matched'].verdict()})" for row in comparison.iso_rows]


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
    ks = sorted({k for r in comparison.loop_scaling for k in r["val_loss"]})
    headers = ["variant", "budget", "seeds"] + [f"{k} loop{'s' if k > 1 else ''}" for k in ks]
    rows = [[r["label"], f"{r['budget']:.3g}", str(r["seeds"])] +
            [f"{r['val_loss'][k].mean:.4f}{'*' if k == r['trained_loops'] else ''}" if k in r["val_loss"] else "-"
             for k in ks] for r in comparison.loop_scaling]
    return headers, rows


def attention_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Share of masked queries' attention on masked keys, per layer application (L1#2: layer 1, 2nd loop)."""
    headers = ["variant", "budget", "seeds", "mask->mask share per layer application"]
    rows = [[r["label"], f"{r['budget']:.3g}", str(r["seeds"]),
             ", ".join(f"{name} {share.mean:.3f}" for name, share in zip(r["layers"], r["share"]))]
            for r in comparison.attention]
    return headers, rows


def task_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Reasoning-task accuracy per loop schedule (95% Wilson interval over all seeds' problems), forward
    GFLOPs per answer, and for adaptive schedules the compute saved against the cheapest fixed loop count that
    is at least as accurate."""
    headers = ["variant", "budget", "seeds", "schedule", "accuracy [95% CI]", "GFLOPs/answer",
               "compute saved at equal accuracy"]

    def saved(r):
        if r["schedule"].startswith("fixed:"):
            return ""
        return "no fixed count as accurate" if r["compute_saved"] is None else f"{100 * r['compute_saved']:.0f}%"
    rows = [[r["label"], f"{r['budget']:.3g}", str(r["seeds"]), r["schedule"], r["accuracy"].fmt(3),
             f"{r['flops_per_problem'] / 1e9:.4f}", saved(r)] for r in comparison.task]
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


def section_text(s: Section) -> str:
    """A section as plain text (stdout): its title, caption, lines, table and notation, no blank line inside."""
    return "\n".join([f"## {s.title}", *([s.caption] if s.caption else []), *s.lines]
                     + ([markdown(s.headers, s.rows)] if s.headers else []) + [f"- {line}" for line in s.footer or []])


def section_markdown(s: Section) -> str:
    text = "".join(f"{line}\n\n" for line in ([s.caption] if s.caption else []) + s.lines)
    table = markdown(s.headers, s.rows) + "\n" if s.headers else ""
    footer = "".join(f"- {line}\n" for line in s.footer or [])
    return f"\n## {s.title}\n\n{text}" + table + ("\n" + footer if footer else "")


def section_html(s: Section, html) -> str:
    """A section's HTML body; the extrapolations' caption stays in the grey note style like their lines."""
    caption = (html.notes if s.title == EXTRAPOLATIONS else html.captions)([s.caption] if s.caption else [])
    return (caption + html.notes(s.lines) + (html.table(s.headers, s.rows) if s.headers else "")
            + html.bullets(s.footer or []))


def figure_markdown(pngs: list[Path]) -> str:
    return f"\n## Figures\n\n{CAPTIONS['figures']}\n\n" + "".join(
        f"![{FIGURE_TITLES[p.stem]}]({p.name})\n\n**{FIGURE_TITLES[p.stem]}.** {CAPTIONS[p.stem]}\n\n" for p in pngs)


def speedups_json(data: SweepData, comparison: Comparison, info: list[str], top: dict | None = None) -> dict:
    return {"experiment": data.experiment, "parent_run_id": data.parent_run_id,
            "loss": LOSS_NAMES[comparison.loss_metric], "loss_metric": comparison.loss_metric,
            "summary": top if top is not None else summary(data, comparison)[1],
            "provenance": info, "rows": [r.as_dict() for r in comparison.rows],
            "iso_flops": [{"label": r["label"], "budgets": r["budgets"], "vs_same_size": r["vs_same_size"].as_dict(),
                           "vs_depth_matched": r["vs_depth_matched"].as_dict()} for r in comparison.iso_rows],
            "extrapolations": [e for t in comparison.extrapolations for e in t.as_dicts()],
            "learning_rates": comparison.learning_rates.as_dict(),
            "held_out_accuracy": [r.as_dict() for r in comparison.accuracy],
            "inference_loop_scaling": [{**r, "val_loss": {k: v.mean for k, v in r["val_loss"].items()}}
                                       for r in comparison.loop_scaling],
            "attention_mask_to_mask": [{**r, "share": [v.mean for v in r["share"]]} for r in comparison.attention],
            "task_accuracy": [{**r, "accuracy": {"mean": r["accuracy"].mean, "low": r["accuracy"].low,
                                                 "high": r["accuracy"].high, "problems": r["accuracy"].n}}
                              for r in comparison.task]}


def provenance_section(info: list[str], top: Section) -> Section:
    """What the numbers rest on, less the lines the summary already shows."""
    return Section("Provenance", [line for line in info if line not in top.lines])


def write_outputs(data: SweepData, comparison: Comparison, out: Path) -> list[Path]:
    """speedups.md/.csv/.json, the figures and index.html. Page order: the summary, the speedup table, the other
    measured tables, the figures, then the extrapolations (a grey note) and the provenance."""
    from dashboards import figures, html
    out.mkdir(parents=True, exist_ok=True)
    info, parts = provenance(data, comparison), sections(comparison)
    top, top_json = summary(data, comparison)
    main_table = speedup_section(comparison)
    measured = [s for s in parts if s.title != EXTRAPOLATIONS]
    fitted = [s for s in parts if s.title == EXTRAPOLATIONS]
    source = provenance_section(info, top)
    with open(out / "speedups.csv", "w", newline="") as f:
        csv.writer(f).writerows([main_table.headers] + main_table.rows)
    (out / "speedups.json").write_text(json.dumps(speedups_json(data, comparison, info, top_json), indent=2))
    pngs = [figures.loss_vs_flops(data, comparison.loss_metric, out / "loss_vs_flops.png"),
            figures.speedup_bars(comparison, out / "speedup_bars.png"),
            figures.loss_vs_loops(comparison, out / "loss_vs_loops.png")]
    if comparison.accuracy:
        pngs.append(figures.accuracy_vs_flops(data, out / "accuracy_vs_flops.png"))
    if comparison.loop_scaling:
        pngs.append(figures.loss_vs_inference_loops(comparison, out / "loss_vs_inference_loops.png"))
    if comparison.attention:
        pngs.append(figures.attention_shares(comparison, out / "attention_shares.png"))
    if comparison.task:
        pngs.append(figures.accuracy_vs_inference_flops(comparison, out / "accuracy_vs_inference_flops.png"))
    md = out / "speedups.md"
    md.write_text("".join(f"- {line}\n" for line in top.lines) + section_markdown(main_table)
                  + "".join(section_markdown(s) for s in measured) + figure_markdown(pngs)
                  + "".join(section_markdown(s) for s in fitted + [source]))
    files = [md, out / "speedups.csv", out / "speedups.json"] + pngs
    body = [("Summary", html.summary(top.lines)), (main_table.title, section_html(main_table, html))]
    body += [(s.title, section_html(s, html)) for s in measured]
    body.append(("Figures", html.captions([CAPTIONS["figures"]]) + "".join(
        html.figure(p, FIGURE_TITLES[p.stem], CAPTIONS[p.stem], alt=p.stem.replace("_", " ")) for p in pngs)))
    body += [(s.title, section_html(s, html)) for s in fitted + [source]]
    page = out / "index.html"
    page.write_text(html.page(f"LoopMDM report: {data.experiment}", body))
    files.append(page)
    return files


def describe(client, data: SweepData, comparison: Comparison):
    """The parent run's description in the MLflow UI: the noise verdict, the speedup table and a link to
    report/index.html; the median speedups (reached, not lower bounds) as metrics
    headline/<variant>/b<budget>/speedup_vs_<baseline>."""
    top = summary(data, comparison)[0]
    headline = {f"{r.label}/b{r.budget:.3g}/speedup_vs_{variant}":
                None if v.speedup.lower_bound else v.speedup.median
                for r in comparison.rows if r.variant == "loop"
                for variant, v in r.versus.items() if v is not None}
    tracking.describe_sweep(client, data.parent_run_id,
                            top.lines[0] + "\n\n" + markdown(headers(comparison), table_rows(comparison)), headline)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", help="MLflow experiment (= the sweep's name); default: the latest sweep")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here")
    parser.add_argument("--sweep-run", help="the sweep's parent run id (default: the latest in the experiment)")
    parser.add_argument("--out", help="output folder (default: reports/<experiment>-<parent run id>)")
    parser.add_argument("--no-log", action="store_true", help="do not log the outputs to the parent run")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        uri = tracking.resolve_uri(args.tracking_uri)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            raise tracking.TrackingError(f"no tracking database at {uri}; run a sweep first or pass --tracking-uri")
        data = load(uri, args.experiment, args.sweep_run)
        comparison = compare(data)
        if not comparison.rows:
            waiting = (f"; {comparison.candidates_left_out} LR-ladder trials finished, no learning rate chosen yet"
                       if comparison.candidates_left_out else "")
            raise tracking.TrackingError(f"sweep {data.parent_run_id} of {data.experiment!r} has no finished trial "
                                         f"with a validation loss yet ({len(data.trials)} trials in all{waiting})")
        out = Path(args.out or Path("reports") / f"{data.experiment}-{data.parent_run_id[:8]}").resolve()
        files = write_outputs(data, comparison, out)
        if not args.no_log:
            client = tracking.check_store(uri)
            for f in files:
                client.log_artifact(data.parent_run_id, str(f), "report")
            describe(client, data, comparison)
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top = summary(data, comparison)[0]
    print("\n".join(top.lines) + "\n")  # the summary, then the speedup table: stdout's first two paragraphs
    for part in [speedup_section(comparison), *sections(comparison),
                 provenance_section(provenance(data, comparison), top)]:
        print(section_text(part) + "\n")
    print(f"report: {out / 'index.html'} (and .md/.csv/.json/.png beside it"
          f"{'' if args.no_log else ', logged to the parent run under report/'}); {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
