"""Turn a sweep's trials into the comparisons the report shows: per loop config and budget, its final loss, its
speedups over its own baselines and whether they stand above seed noise; held-out accuracy; learning rates.

Pairing (docs/definitions.md, "Groups and pairing"): inside one group (same budget and seed), a loop trial's
same-size baseline is the group's same_size trial, its depth-matched baseline the depth_matched trial with as many
layers as the loop applies. Across seeds, a speedup is censored data (seeds that never reach the target rank below every reached value): its
median over seeds, a bootstrap 95% interval and the fraction reached; a paired difference (loop minus baseline,
same seed) gets a Student t interval. LR-ladder candidates (SweepData.compared) are in no comparison.
"""

from collections import defaultdict
from dataclasses import dataclass, field, replace

from loopmdm_core import metrics
from loopmdm_core.model import BASELINES

from . import isoflops as iso
from .sweep_data import SweepData, TrialRecord

LOSS_NAMES = {
    metrics.VAL_LOSS: "validation negative ELBO (val/loss, nats/token; lower is better)",
    metrics.VAL_ANSWER_LOSS: "validation negative ELBO on answer tokens only (val/answer_loss, nats per answer "
                             "token; lower is better)",
}


def compared_loss(trials: list[TrialRecord]) -> str:
    """val/answer_loss when every trial has it (a task sweep: the answers are what is learnt), else val/loss: a
    sweep where only some trials have answer loss is compared like with like on the loss they all have."""
    return metrics.VAL_ANSWER_LOSS if trials and all(t.answer_curve for t in trials) else metrics.VAL_LOSS


def summarize(speedups: list[iso.Speedup]) -> iso.CensoredMedian:
    return iso.censored_median([s.value for s in speedups], [s.lower_bound for s in speedups])


@dataclass(frozen=True)
class Versus:
    """A loop config against one of its baselines, over the seeds that have both."""
    baseline: str  # the baseline's label
    speedup: iso.CensoredMedian
    baseline_loss: float  # the baseline's final loss, seed mean
    baseline_std: float | None  # its seed-to-seed spread (sample std); None with one seed
    difference: iso.Interval | None  # loop minus baseline loss at the baseline's final FLOPs, paired, t over seeds;
    # None where no loop curve spans that point

    def difference_verdict(self) -> str:
        if self.difference is None:
            return "n/a"
        if self.difference.n < 2:
            return iso.ONE_SEED
        return iso.verdict(self.difference.low, self.difference.high, 0.0, "higher loss", "lower loss")

    def as_dict(self) -> dict:
        d = self.difference
        return {"baseline": self.baseline,
                "baseline_final_loss": {"mean": self.baseline_loss, "std": self.baseline_std,
                                        "seeds": self.speedup.seeds},
                "paired_loss_difference": None if d is None else {
                    "mean": d.mean, "low": d.low if d.n > 1 else None, "high": d.high if d.n > 1 else None,
                    "seeds": d.n, "verdict": self.difference_verdict()}}


@dataclass(frozen=True)
class Row:
    label: str
    variant: str
    loop: str
    n_loops: int
    params: int
    flops_per_token: int
    budget: float
    final_loss: iso.Interval
    versus: dict = field(default_factory=dict)  # baseline variant -> Versus, or None (no such baseline); loops only

    def as_dict(self) -> dict:
        out = {"label": self.label, "variant": self.variant, "loop": self.loop, "n_loops": self.n_loops,
               "params": self.params, "flops_per_token": self.flops_per_token, "budget_flops": self.budget,
               "final_val_loss": {"mean": self.final_loss.mean, "low": self.final_loss.low,
                                  "high": self.final_loss.high, "seeds": self.final_loss.n}}
        for variant in BASELINES:
            v = self.versus.get(variant)
            out[f"speedup_vs_{variant}"] = v.speedup.as_dict() if v else None
            out[f"noise_vs_{variant}"] = v.as_dict() if v else None
        return out


@dataclass(frozen=True)
class Trend:
    """An EXTRAPOLATION of one loop config over its same-size baseline at the largest budget: kept apart from the
    measured rows, each factor reported or withheld (iso.extrapolate)."""
    label: str
    baseline: str
    budget: float
    seeds: int
    fit: iso.Fit
    baseline_fit: iso.Fit
    at: list  # iso.Extrapolated per multiple of the budget

    def as_dicts(self) -> list[dict]:
        return [{"label": self.label, "baseline": self.baseline, "budget_multiple": e.factor,
                 "flops": self.budget * e.factor, "status": e.status, "reason": e.withheld or None,
                 "speedup": e.speedup, "low": e.low, "high": e.high, "seeds": self.seeds,
                 "fit": self.fit.as_dict(), "baseline_fit": self.baseline_fit.as_dict()} for e in self.at]


NEWCOMBE = "1 seed: sampling noise only"  # a one-seed accuracy gap: Newcombe's interval from the two counts


@dataclass(frozen=True)
class AccuracyRow:
    """Held-out accuracy of one (label, budget) over seeds, and for a loop config its paired gap to the same-size
    baseline and the FLOPs it needs to reach the baseline's final accuracy."""
    label: str
    variant: str
    budget: float
    seeds: int
    pooled: iso.Interval | None  # final accuracy, Wilson over all seeds' problems; None: problem count unknown
    seed_mean: iso.Interval  # final accuracy, t over seeds
    gap: iso.Interval | None = None  # loop minus same-size, same seed; None: not a loop, or no same-size baseline
    gap_method: str = ""  # "t over seeds", NEWCOMBE (one seed), or iso.ONE_SEED (one seed, no problem count)
    speedup: iso.CensoredMedian | None = None

    def gap_verdict(self) -> str:
        if self.gap is None:
            return "-"
        if self.gap_method == iso.ONE_SEED:
            return iso.ONE_SEED
        v = iso.verdict(self.gap.low, self.gap.high, 0.0, "higher accuracy", "lower accuracy")
        return f"{v} ({NEWCOMBE})" if self.gap_method == NEWCOMBE else v

    def as_dict(self) -> dict:
        gap = None
        if self.gap is not None:
            bounded = self.gap_method != iso.ONE_SEED
            gap = {"mean": self.gap.mean, "low": self.gap.low if bounded else None,
                   "high": self.gap.high if bounded else None, "method": self.gap_method,
                   "verdict": self.gap_verdict()}
        return {"label": self.label, "variant": self.variant, "budget": self.budget, "seeds": self.seeds,
                "pooled_wilson": None if self.pooled is None else {
                    "mean": self.pooled.mean, "low": self.pooled.low, "high": self.pooled.high,
                    "problems": self.pooled.n},
                "seed_mean_t": {"mean": self.seed_mean.mean, "low": self.seed_mean.low if self.seeds > 1 else None,
                                "high": self.seed_mean.high if self.seeds > 1 else None, "seeds": self.seeds},
                "gap_vs_same_size": gap, "speedup_vs_same_size": self.speedup.as_dict() if self.speedup else None}


@dataclass(frozen=True)
class LadderCell:
    label: str
    lr: float
    loss: float  # seed-mean final compared loss at the ladder's budget
    seeds: int
    chosen: bool


@dataclass(frozen=True)
class LearningRates:
    budget: float | None  # the LR ladder's budget (the smallest); None: no ladder in the sweep
    cells: tuple = ()  # LadderCell per (label, lr) of the ladder
    lines: tuple = ()  # what each variant used, in words

    def as_dict(self) -> dict:
        return {"ladder_budget": self.budget, "lines": list(self.lines),
                "ladder": [c.__dict__ for c in self.cells]}


@dataclass(frozen=True)
class IsoFlopsRow:
    """A loop config's speedups across budgets: each variant's curve through its final losses at every budget."""
    label: str
    budgets: list[float]
    vs_same_size: iso.CensoredMedian
    vs_depth_matched: iso.CensoredMedian

    def as_dict(self) -> dict:
        return {"label": self.label, "budgets": self.budgets, "vs_same_size": self.vs_same_size.as_dict(),
                "vs_depth_matched": self.vs_depth_matched.as_dict()}


@dataclass(frozen=True)
class LoopScalingRow:
    """Validation loss of one (label, budget)'s trained weights run with each number of loops, over seeds."""
    label: str
    budget: float
    trained_loops: int | None
    seeds: int
    val_loss: dict[int, iso.Interval]  # inference loop count -> loss over seeds

    def as_dict(self) -> dict:
        return {"label": self.label, "budget": self.budget, "trained_loops": self.trained_loops,
                "seeds": self.seeds, "val_loss": {k: v.mean for k, v in self.val_loss.items()}}


@dataclass(frozen=True)
class AttentionRow:
    """Mask->mask attention share of one (label, budget) per layer application in unrolled order, over seeds."""
    label: str
    budget: float
    seeds: int
    layers: list[str]  # applied_layer_names
    share: list[iso.Interval]

    def as_dict(self) -> dict:
        return {"label": self.label, "budget": self.budget, "seeds": self.seeds, "layers": self.layers,
                "share": [v.mean for v in self.share]}


@dataclass(frozen=True)
class TaskRow:
    """Reasoning-task accuracy of one (label, budget) under one inference loop schedule, pooled over seeds."""
    label: str
    budget: float
    schedule: str  # fixed:k, or an adaptive schedule
    seeds: int
    accuracy: iso.Interval  # Wilson over all seeds' problems
    flops_per_problem: float  # forward FLOPs, seed mean
    compute_saved: float | None = None  # adaptive only: against the cheapest fixed count as accurate; None: none is

    @property
    def fixed(self) -> bool:
        return self.schedule.startswith("fixed:")

    def as_dict(self) -> dict:
        a = self.accuracy
        return {"label": self.label, "budget": self.budget, "schedule": self.schedule, "seeds": self.seeds,
                "accuracy": {"mean": a.mean, "low": a.low, "high": a.high, "problems": a.n},
                "flops_per_problem": self.flops_per_problem, "compute_saved": self.compute_saved}


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    loss_metric: str = metrics.VAL_LOSS  # the loss every curve, speedup and extrapolation reads
    iso_rows: list[IsoFlopsRow] = field(default_factory=list)  # across budgets, from finished schedules
    extrapolations: list[Trend] = field(default_factory=list)  # power-law trends: clearly marked, never in `rows`
    trials_used: int = 0
    candidates_left_out: int = 0  # LR-ladder candidates: only in `learning_rates`
    loop_scaling: list[LoopScalingRow] = field(default_factory=list)
    attention: list[AttentionRow] = field(default_factory=list)
    task: list[TaskRow] = field(default_factory=list)
    accuracy: list[AccuracyRow] = field(default_factory=list)  # held-out accuracy (val/accuracy) at training end
    learning_rates: LearningRates = field(default_factory=lambda: LearningRates(None))


def trial_curve(t: TrialRecord, metric: str = metrics.VAL_LOSS) -> iso.Curve:
    return iso.curve(*zip(*t.history(metric)))


def trial_accuracy(t: TrialRecord) -> iso.AccuracyCurve:
    return iso.accuracy_curve(*zip(*t.accuracy_curve))


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


def _pairs(loops: list[TrialRecord], groups, variant: str) -> list[tuple[TrialRecord, TrialRecord]]:
    """(baseline, loop) per seed that has both."""
    out = []
    for t in loops:
        base = baseline_for(t, groups[(t.budget, t.seed)], variant)
        if base is not None:
            out.append((base, t))
    return out


def compare(data: SweepData) -> Comparison:
    trials = data.compared
    metric = compared_loss(data.finished)  # LR-ladder candidates too: their table shows the same loss
    groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for t in trials:
        groups[(t.budget, t.seed)].append(t)
    by_cell: dict[tuple, list[TrialRecord]] = defaultdict(list)  # (label, budget) -> its trials over seeds
    for t in trials:
        by_cell[(t.label, t.budget)].append(t)
    order = {"loop": 0, "same_size": 1, "depth_matched": 2}
    cells = sorted(by_cell.items(), key=lambda kv: (kv[0][1], order.get(kv[1][0].variant, 3), kv[0][0]))
    rows = [_row(cell, groups, metric) for _, cell in cells]
    return Comparison(rows, metric, _iso_rows(trials, groups, metric), _extrapolations(trials, groups, metric),
                      len(trials), len(data.finished) - len(trials), _loop_scaling_rows(by_cell),
                      _attention_rows(by_cell), _task_rows(by_cell),
                      [r for _, cell in cells if (r := _accuracy_row(cell, groups))],
                      learning_rates(data, metric))


def _row(cell: list[TrialRecord], groups, metric: str) -> Row:
    first = cell[0]
    loop_range, n_loops = _describe(first)
    versus = {v: _versus(cell, groups, v, metric) for v in BASELINES} if first.variant == "loop" else {}
    return Row(first.label, first.variant, loop_range, n_loops, first.param("derived.params") or 0,
               first.param("derived.flops_per_token") or 0, first.budget,
               iso.bootstrap([trial_curve(t, metric).final_loss for t in cell]), versus)


def _versus(loops: list[TrialRecord], groups, variant: str, metric: str) -> Versus | None:
    pairs = _pairs(loops, groups, variant)
    if not pairs:
        return None
    curves = [(trial_curve(b, metric), trial_curve(t, metric)) for b, t in pairs]
    gaps = [g for b, v in curves if (g := iso.loss_gap(b, v)) is not None]
    finals = [b.final_loss for b, _ in curves]
    return Versus(pairs[0][0].label, summarize([iso.speedup(b, v) for b, v in curves]), sum(finals) / len(finals),
                  iso.spread(finals), iso.t_interval(gaps) if gaps else None)


def _accuracy_row(cell: list[TrialRecord], groups) -> AccuracyRow | None:
    having = [t for t in cell if t.accuracy_curve]
    if not having:
        return None
    finals = [trial_accuracy(t).final_accuracy for t in having]
    counts = [_correct(t) for t in having]
    pooled = None if None in counts else iso.wilson(sum(c for c, _ in counts), sum(n for _, n in counts))
    row = AccuracyRow(having[0].label, having[0].variant, having[0].budget, len(having), pooled,
                      iso.t_interval(finals))
    pairs = [(b, t) for b, t in _pairs(having, groups, "same_size") if b.accuracy_curve]
    if having[0].variant != "loop" or not pairs:
        return row
    gap, method = _accuracy_gap(pairs)
    return replace(row, gap=gap, gap_method=method,
                   speedup=summarize([iso.accuracy_speedup(trial_accuracy(b), trial_accuracy(t)) for b, t in pairs]))


def _correct(t: TrialRecord) -> tuple[int, int] | None:
    """(correct, problems) of a trial's final accuracy; None when the run does not record its problem count."""
    n = t.param("eval.task_problems")
    return (round(trial_accuracy(t).final_accuracy * n), n) if n else None


def _accuracy_gap(pairs) -> tuple[iso.Interval, str]:
    """Loop minus same-size final accuracy, same seed: t over seeds; one seed: the binomial noise of the two
    problem sets (Newcombe), or no interval without their counts."""
    if len(pairs) > 1:
        return iso.t_interval([trial_accuracy(t).final_accuracy - trial_accuracy(b).final_accuracy
                               for b, t in pairs]), "t over seeds"
    (base, loop), = pairs
    counts = _correct(loop), _correct(base)
    if None in counts:
        return iso.t_interval([trial_accuracy(loop).final_accuracy - trial_accuracy(base).final_accuracy]), \
            iso.ONE_SEED
    return iso.newcombe(*counts[0], *counts[1]), NEWCOMBE


def learning_rates(data: SweepData, metric: str) -> LearningRates:
    """Which learning rate each variant used; with an LR ladder, the seed-mean final loss of every ladder LR at
    the ladder's budget (the smallest), candidates included, and the one chosen."""
    ladder = [t for t in data.finished if t.lr_ladder]
    if not ladder:
        return LearningRates(None, (), tuple(_untuned(data.compared)))
    budget = min(t.budget for t in ladder)
    at = [t for t in ladder if t.budget == budget and t.lr is not None]
    chosen = {(t.label, t.lr) for t in at if t.lr_ladder == "chosen"}
    by_lr = defaultdict(list)
    for t in at:
        by_lr[(t.label, t.lr)].append(trial_curve(t, metric).final_loss)
    cells = tuple(LadderCell(label, lr, sum(v) / len(v), len(v), (label, lr) in chosen)
                  for (label, lr), v in sorted(by_lr.items()))
    return LearningRates(budget, cells, tuple(_ladder_line(label, data.compared, chosen, budget)
                                              for label in sorted({t.label for t in data.compared})))


def _lrs(trials) -> str:
    return ", ".join(f"{lr:g}" for lr in sorted({t.lr for t in trials if t.lr is not None})) or "not recorded"


def _untuned(trials: list[TrialRecord]) -> list[str]:
    lrs = {t.lr for t in trials}
    if len(lrs) == 1 and None not in lrs:
        return [f"one shared learning rate {lrs.pop():g} for every variant (not tuned)"]
    return [f"{label}: lr {_lrs(t for t in trials if t.label == label)} (no LR ladder: not tuned)"
            for label in sorted({t.label for t in trials})]


def _ladder_line(label: str, trials: list[TrialRecord], chosen: set, budget: float) -> str:
    used = {t.lr for t in trials if t.label == label}
    picked = {lr for name, lr in chosen if name == label}
    if not picked:
        return f"{label}: lr {_lrs(t for t in trials if t.label == label)} (not in the LR ladder)"
    if used == picked and len(used) == 1:
        return (f"{label}: used lr {used.pop():g} at every budget (chosen at budget {budget:.3g} by final "
                f"validation loss, seeds averaged)")
    return (f"{label}: used lr {_lrs(t for t in trials if t.label == label)} across budgets; the ladder chose "
            f"{', '.join(f'{lr:g}' for lr in sorted(picked))} at budget {budget:.3g}")


def applied_layer_names(t: TrialRecord) -> list[str]:
    """Names of a trial's layer applications in order: 'L2' for a layer run once, 'L2#3' for its 3rd loop."""
    start, end, n, layers = (t.param(k) for k in ("model.loop_start", "model.loop_end", "model.n_loops",
                                                  "model.n_layers"))
    names = [f"L{i}" for i in range(start)]
    names += [f"L{i}#{k}" if n > 1 else f"L{i}" for k in range(1, n + 1) for i in range(start, end)]
    return names + [f"L{i}" for i in range(end, layers)]


def _cells_having(by_cell, has) -> list[tuple[str, float, list[TrialRecord]]]:
    """(label, budget, its trials for which `has` holds) per cell that has any, by budget then label."""
    out = []
    for (label, budget), trials in sorted(by_cell.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        having = [t for t in trials if has(t)]
        if having:
            out.append((label, budget, having))
    return out


def _loop_scaling_rows(by_cell) -> list[LoopScalingRow]:
    """Seed means of the loss at each inference loop count every seed evaluated; a model trained with one pass
    at that pass only (stores written before evaluate.inference_eval kept to it hold more)."""
    out = []
    for label, budget, having in _cells_having(by_cell, lambda t: t.loop_scaling):
        loops = sorted(set.intersection(*(set(t.loop_scaling) for t in having)))
        if having[0].trained_one_pass:
            loops = [k for k in loops if k == 1]
        values = {k: iso.bootstrap([t.loop_scaling[k] for t in having]) for k in loops}
        out.append(LoopScalingRow(label, budget, having[0].param("model.n_loops"), len(having), values))
    return out


def _attention_rows(by_cell) -> list[AttentionRow]:
    """Seed means of the attention share per layer application, over the applications every seed has."""
    out = []
    for label, budget, having in _cells_having(by_cell, lambda t: t.attention):
        shares = [iso.bootstrap([t.attention[i] for t in having]) for i in range(min(len(t.attention)
                                                                                    for t in having))]
        out.append(AttentionRow(label, budget, len(having), applied_layer_names(having[0])[:len(shares)], shares))
    return out


def _task_rows(by_cell) -> list[TaskRow]:
    """Reasoning-task accuracy per (label, budget, schedule), pooled over seeds (Wilson interval over all their
    problems), with mean forward FLOPs per problem; an adaptive schedule also gets the compute it saves against
    the cheapest fixed loop count of the same models that is at least as accurate. A model trained with one
    pass has fixed:1 only: its other schedules loop layers it never learned to loop (older stores hold them)."""
    out = []
    for label, budget, having in _cells_having(by_cell, lambda t: t.task and t.task_problems):
        schedules = [s for s in having[0].task if all(s in t.task for t in having)
                     and (s == "fixed:1" or not having[0].trained_one_pass)]
        rows = []
        for sched in schedules:
            correct = sum(round(t.task[sched][0] * t.task_problems) for t in having)
            total = sum(t.task_problems for t in having)
            rows.append(TaskRow(label, budget, sched, len(having), iso.wilson(correct, total),
                                sum(t.task[sched][1] for t in having) / len(having)))
        fixed = [(r.flops_per_problem, r.accuracy.mean) for r in rows if r.fixed]
        out += [r if r.fixed else replace(r, compute_saved=iso.compute_saved(fixed, r.flops_per_problem,
                                                                             r.accuracy.mean)) for r in rows]
    return out


def _iso_rows(trials: list[TrialRecord], groups, metric: str) -> list[IsoFlopsRow]:
    """Speedups from finished schedules: each variant's curve through its final losses at every budget."""
    budgets = sorted({t.budget for t in trials})
    if len(budgets) < 2:
        return []
    out = []
    for label in sorted({t.label for t in trials if t.variant == "loop"}):
        per_variant = defaultdict(list)
        for seed in sorted({t.seed for t in trials}):
            finals: dict[str, list] = defaultdict(list)
            for loop in (t for t in trials if t.label == label and t.seed == seed):
                finals["loop"].append(_final(loop, metric))
                for variant in BASELINES:
                    base = baseline_for(loop, groups[(loop.budget, seed)], variant)
                    if base is not None:
                        finals[variant].append(_final(base, metric))
            for variant in BASELINES:
                if len(finals[variant]) >= 2 and len(finals["loop"]) >= 2:
                    per_variant[variant].append(iso.speedup(iso.iso_curve(finals[variant]),
                                                            iso.iso_curve(finals["loop"])))
        out.append(IsoFlopsRow(label, budgets, summarize(per_variant["same_size"]),
                               summarize(per_variant["depth_matched"])))
    return out


def _final(t: TrialRecord, metric: str) -> tuple[float, float]:
    c = trial_curve(t, metric)
    return c.final_flops, c.final_loss


def _extrapolations(trials: list[TrialRecord], groups, metric: str) -> list[Trend]:
    """Power-law trends of each loop config and its same-size baseline at the largest budget (seed-mean curves)
    and the speedup they predict at 10x and 100x that budget, each reported with its bootstrap interval over
    seeds or withheld (iso.extrapolate). Extrapolations: the report prints them apart, labelled as such."""
    if not trials:
        return []
    top = max(t.budget for t in trials)
    at_top = [t for t in trials if t.budget == top]
    out = []
    for label in sorted({t.label for t in at_top if t.variant == "loop"}):
        pairs = _pairs([t for t in at_top if t.label == label], groups, "same_size")
        if not pairs:
            continue
        base_fit, fit, at = iso.extrapolate([trial_curve(b, metric) for b, _ in pairs],
                                            [trial_curve(t, metric) for _, t in pairs], (pairs[0][0].label, label), top)
        out.append(Trend(label, pairs[0][0].label, top, len(pairs), fit, base_fit, at))
    return out
