"""The report's opening and closing words: whether its comparisons exceed the seed-to-seed noise, the sweep's
scale, and what the numbers rest on (provenance)."""

from dataclasses import dataclass

from .comparison import LOSS_NAMES, Comparison
from .report_tables import Section, baseline_pairs
from .report_text import INTERVALS
from .sweep_data import SweepData

COUNTED = ("loss difference", "held-out accuracy gap")  # the verdicts the summary counts (noise_summary)
DIRECTIONAL = {"faster", "slower", "lower loss", "higher loss", "higher accuracy", "lower accuracy"}


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


def provenance_section(info: list[str], top: Section) -> Section:
    """What the numbers rest on, less the lines the summary already shows."""
    return Section("Provenance", [line for line in info if line not in top.lines])
