"""Turn a sweep's trials into the comparisons the report shows: per loop config and budget, its final loss and
its speedups over its own baselines, with seeds aggregated (mean and bootstrap 95% interval).

Pairing (DESIGN.md): inside one group (same budget and seed), a loop trial's same-size baseline is the group's
same_size trial, its depth-matched baseline the depth_matched trial with as many layers as the loop applies.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from . import isoflops as iso
from .sweep_data import SweepData, TrialRecord

BASELINES = ("same_size", "depth_matched")


@dataclass
class SpeedupSummary:
    """A speedup over seeds: the interval over seeds that reached the target, and how many did not."""
    interval: iso.Interval | None
    not_reached: int
    lower_bounds: int
    seeds: int

    def fmt(self) -> str:
        if self.seeds == 0:
            return "n/a (no baseline)"
        if self.interval is None:
            return f"not reached ({self.not_reached}/{self.seeds} seeds)"
        text = ("≥ " if self.lower_bounds else "") + self.interval.fmt(2, "x")
        if self.not_reached:
            text += f"; not reached in {self.not_reached}/{self.seeds} seeds"
        return text

    def as_dict(self) -> dict:
        i = self.interval
        return {"mean": i.mean if i else None, "low": i.low if i else None, "high": i.high if i else None,
                "seeds": self.seeds, "not_reached": self.not_reached, "lower_bounds": self.lower_bounds}


def summarize(speedups: list[iso.Speedup]) -> SpeedupSummary:
    reached = [s for s in speedups if s.reached]
    return SpeedupSummary(iso.bootstrap([s.value for s in reached]) if reached else None,
                          len(speedups) - len(reached), sum(s.lower_bound for s in reached), len(speedups))


@dataclass
class Row:
    label: str
    variant: str
    loop: str
    n_loops: int
    params: int
    flops_per_token: int
    budget: float
    final_loss: iso.Interval
    vs_same_size: SpeedupSummary | None = None
    vs_depth_matched: SpeedupSummary | None = None
    gap_vs_same_size: iso.Interval | None = None  # loss difference at the baseline's final FLOPs

    def as_dict(self) -> dict:
        return {"label": self.label, "variant": self.variant, "loop": self.loop, "n_loops": self.n_loops,
                "params": self.params, "flops_per_token": self.flops_per_token, "budget_flops": self.budget,
                "final_val_loss": {"mean": self.final_loss.mean, "low": self.final_loss.low,
                                   "high": self.final_loss.high, "seeds": self.final_loss.n},
                "speedup_vs_same_size": self.vs_same_size.as_dict() if self.vs_same_size else None,
                "speedup_vs_depth_matched": self.vs_depth_matched.as_dict() if self.vs_depth_matched else None,
                "loss_gap_vs_same_size": self.gap_vs_same_size.mean if self.gap_vs_same_size else None}


@dataclass
class Comparison:
    rows: list[Row]
    iso_rows: list[dict] = field(default_factory=list)  # across budgets, from finished schedules
    extrapolations: list[dict] = field(default_factory=list)  # power-law trends: clearly marked, never in `rows`
    trials_used: int = 0
    loop_scaling: list[dict] = field(default_factory=list)  # per (label, budget): n_loops -> mean val loss
    attention: list[dict] = field(default_factory=list)  # per (label, budget): mean share per layer application
    task: list[dict] = field(default_factory=list)  # per (label, budget, schedule): accuracy, FLOPs, compute saved


def trial_curve(t: TrialRecord) -> iso.Curve:
    return iso.curve([c for c, _ in t.curve], [l for _, l in t.curve])


def baseline_for(loop: TrialRecord, group: list[TrialRecord], variant: str) -> TrialRecord | None:
    for t in group:
        if t.variant != variant:
            continue
        if variant == "same_size" or t.param("model.n_layers") == loop.param("derived.applied_layers"):
            return t
    return None


def _describe(t: TrialRecord) -> tuple[str, int]:
    start, end, n = t.param("model.loop_start"), t.param("model.loop_end"), t.param("model.n_loops")
    return (f"[{start},{end})" if t.variant == "loop" else "-"), n or 1


def compare(data: SweepData) -> Comparison:
    finished = data.finished
    groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for t in finished:
        groups[(t.budget, t.seed)].append(t)
    by_cell: dict[tuple, list[TrialRecord]] = defaultdict(list)  # (label, budget) -> its trials over seeds
    for t in finished:
        by_cell[(t.label, t.budget)].append(t)

    rows = []
    order = {"loop": 0, "same_size": 1, "depth_matched": 2}
    for (label, budget), trials in sorted(by_cell.items(), key=lambda kv: (kv[0][1], order.get(kv[1][0].variant, 3),
                                                                          kv[0][0])):
        first = trials[0]
        loop_range, n_loops = _describe(first)
        row = Row(label, first.variant, loop_range, n_loops, first.param("derived.params") or 0,
                  first.param("derived.flops_per_token") or 0, budget,
                  iso.bootstrap([trial_curve(t).final_loss for t in trials]))
        if first.variant == "loop":
            for variant in BASELINES:
                speedups, gaps = [], []
                for t in trials:
                    base = baseline_for(t, groups[(t.budget, t.seed)], variant)
                    if base is None:
                        continue
                    speedups.append(iso.speedup(trial_curve(base), trial_curve(t)))
                    gap = iso.loss_gap(trial_curve(base), trial_curve(t))
                    if gap is not None:
                        gaps.append(gap)
                summary = summarize(speedups)
                if variant == "same_size":
                    row.vs_same_size = summary
                    row.gap_vs_same_size = iso.bootstrap(gaps) if gaps else None
                else:
                    row.vs_depth_matched = summary
        rows.append(row)
    return Comparison(rows, _iso_rows(finished, groups), _extrapolations(finished, groups), len(finished),
                      _inference_rows(by_cell, "loop_scaling"), _inference_rows(by_cell, "attention"),
                      _task_rows(by_cell))


def applied_layer_names(t: TrialRecord) -> list[str]:
    """Names of a trial's layer applications in order: 'L2' for a layer run once, 'L2#3' for its 3rd loop."""
    start, end, n, layers = (t.param(k) for k in ("model.loop_start", "model.loop_end", "model.n_loops",
                                                  "model.n_layers"))
    names = [f"L{i}" for i in range(start)]
    names += [f"L{i}#{k}" if n > 1 else f"L{i}" for k in range(1, n + 1) for i in range(start, end)]
    return names + [f"L{i}" for i in range(end, layers)]


def _inference_rows(by_cell, attr: str) -> list[dict]:
    """Seed means of the after-training evaluations, per (label, budget) that has them."""
    out = []
    for (label, budget), trials in sorted(by_cell.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        having = [t for t in trials if getattr(t, attr)]
        if not having:
            continue
        if attr == "loop_scaling":
            loops = sorted(set.intersection(*(set(t.loop_scaling) for t in having)))
            values = {k: iso.bootstrap([t.loop_scaling[k] for t in having]) for k in loops}
            out.append({"label": label, "budget": budget, "trained_loops": having[0].param("model.n_loops"),
                        "seeds": len(having), "val_loss": values})
        else:
            shares = [iso.bootstrap([t.attention[i] for t in having]) for i in range(min(len(t.attention)
                                                                                        for t in having))]
            out.append({"label": label, "budget": budget, "seeds": len(having),
                        "layers": applied_layer_names(having[0])[:len(shares)], "share": shares})
    return out


def _task_rows(by_cell) -> list[dict]:
    """Reasoning-task accuracy per (label, budget, schedule), pooled over seeds (Wilson interval over all their
    problems), with mean forward FLOPs per problem; an adaptive schedule also gets the compute it saves against
    the cheapest fixed loop count of the same models that is at least as accurate."""
    out = []
    for (label, budget), trials in sorted(by_cell.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        having = [t for t in trials if t.task and t.task_problems]
        if not having:
            continue
        schedules = [s for s in having[0].task if all(s in t.task for t in having)]
        rows = []
        for sched in schedules:
            correct = sum(round(t.task[sched][0] * t.task_problems) for t in having)
            total = sum(t.task_problems for t in having)
            rows.append({"label": label, "budget": budget, "schedule": sched, "seeds": len(having),
                         "accuracy": iso.wilson(correct, total),
                         "flops_per_problem": sum(t.task[sched][1] for t in having) / len(having)})
        fixed = [(r["flops_per_problem"], r["accuracy"].mean) for r in rows if r["schedule"].startswith("fixed:")]
        for r in rows:
            r["compute_saved"] = None if r["schedule"].startswith("fixed:") else \
                iso.compute_saved(fixed, r["flops_per_problem"], r["accuracy"].mean)
        out += rows
    return out


def _iso_rows(finished: list[TrialRecord], groups) -> list[dict]:
    """Speedups from finished schedules: each variant's curve through its final losses at every budget."""
    budgets = sorted({t.budget for t in finished})
    if len(budgets) < 2:
        return []
    out = []
    for label in sorted({t.label for t in finished if t.variant == "loop"}):
        per_variant = defaultdict(list)
        for seed in sorted({t.seed for t in finished}):
            finals: dict[str, list] = defaultdict(list)
            loops = [t for t in finished if t.label == label and t.seed == seed]
            for loop in loops:
                finals["loop"].append((trial_curve(loop).final_flops, trial_curve(loop).final_loss))
                for variant in BASELINES:
                    base = baseline_for(loop, groups[(loop.budget, seed)], variant)
                    if base is not None:
                        finals[variant].append((trial_curve(base).final_flops, trial_curve(base).final_loss))
            for variant in BASELINES:
                if len(finals[variant]) >= 2 and len(finals["loop"]) >= 2:
                    per_variant[variant].append(iso.speedup(iso.iso_curve(finals[variant]),
                                                            iso.iso_curve(finals["loop"])))
        out.append({"label": label, "budgets": budgets,
                    **{f"vs_{v}": summarize(per_variant[v]) for v in BASELINES}})
    return out


def _extrapolations(finished: list[TrialRecord], groups) -> list[dict]:
    """Power-law fits of each variant's curve at the largest budget (seeds pooled) and the speedup the trends
    predict at 10x and 100x that budget. Extrapolations: the report prints them apart, labelled as such."""
    if not finished:
        return []
    top = max(t.budget for t in finished)
    at_top = [t for t in finished if t.budget == top]
    fits = {}
    for label in {t.label for t in at_top}:
        fits[label] = iso.fit_power_law(iso.mean_curve(p for t in at_top if t.label == label for p in t.curve))
    out = []
    for loop in sorted({t.label for t in at_top if t.variant == "loop"}):
        example = next(t for t in at_top if t.label == loop)
        base = baseline_for(example, groups[(example.budget, example.seed)], "same_size")
        if base is None or fits.get(loop) is None or fits.get(base.label) is None:
            continue
        out.append({"label": loop, "baseline": base.label, "fit": fits[loop].__dict__,
                    "baseline_fit": fits[base.label].__dict__,
                    **{f"speedup_at_{k}x": iso.predicted_speedup(fits[base.label], fits[loop], top * k)
                       for k in (10, 100)}})
    return out
