"""The iso-FLOPs math of docs/definitions.md ("Speedup"): pure functions of loss-vs-FLOPs curves, no I/O.

A curve is validation loss against cumulative training FLOPs. It is made monotone (running minimum: the best
loss reached so far) before anything is read off it. FLOPs between two evaluations are interpolated linearly
in log C against log L; nothing is ever extrapolated past a curve's ends: a target a curve never reaches
is reported as not reached, and a target it already beats at its first point gives a bound, flagged.

Across seeds nothing is averaged over only the seeds that reached a target: speedups are censored data (a median
in which not-reached seeds rank lowest, with a bootstrap interval over seeds), paired differences get a Student t
interval, and a power-law extrapolation is withheld unless its fits pass a quality gate and its bootstrap interval
is narrow. Task accuracy curves (higher is better) get the mirror of the loss-curve reading: a running maximum.
"""

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    flops: np.ndarray  # strictly increasing
    loss: np.ndarray

    def __len__(self) -> int:
        return len(self.flops)

    @property
    def final_flops(self) -> float:
        return float(self.flops[-1])

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])


def curve(flops, losses) -> Curve:
    """A curve from (FLOPs, loss) pairs: sorted by FLOPs, non-finite or non-positive points dropped, the last
    value kept where FLOPs repeat."""
    pts = {}
    for c, l in zip(flops, losses):
        c, l = float(c), float(l)
        if math.isfinite(c) and math.isfinite(l) and c > 0 and l > 0:
            pts[c] = l
    if not pts:
        raise ValueError("a curve needs at least one finite point with positive FLOPs and loss")
    xs = sorted(pts)
    return Curve(np.array(xs), np.array([pts[x] for x in xs]))


def envelope(c: Curve) -> Curve:
    """The monotone (non-increasing) envelope: the best loss reached by each point."""
    return Curve(c.flops, np.minimum.accumulate(c.loss))


@dataclass(frozen=True)
class Reach:
    flops: float | None  # FLOPs at which the curve first reaches the target; None: never
    at_first_point: bool = False  # already at or below the target at its first point: flops is an upper bound


def flops_to_reach(c: Curve, target: float) -> Reach:
    e = envelope(c)
    if e.loss[0] <= target:
        return Reach(float(e.flops[0]), at_first_point=True)
    below = np.nonzero(e.loss <= target)[0]
    if not len(below):
        return Reach(None)
    i = int(below[0])
    lc0, lc1 = math.log(e.flops[i - 1]), math.log(e.flops[i])
    ll0, ll1 = math.log(e.loss[i - 1]), math.log(e.loss[i])
    # ll0 > log(target) >= ll1 in exact arithmetic; losses one ulp apart can round to equal logs: take the point
    # that reaches the target (found by hypothesis, tests/test_properties.py)
    frac = (math.log(target) - ll0) / (ll1 - ll0) if ll1 < ll0 else 1.0
    return Reach(math.exp(lc0 + frac * (lc1 - lc0)))


def loss_at(c: Curve, flops: float) -> float | None:
    """The envelope's loss at `flops`, interpolated in log-log; None outside the curve's FLOPs range."""
    e = envelope(c)
    if not e.flops[0] <= flops <= e.flops[-1]:
        return None
    return float(np.exp(np.interp(math.log(flops), np.log(e.flops), np.log(e.loss))))


@dataclass(frozen=True)
class Speedup:
    value: float | None  # C_baseline(final) / C_variant(target); None: the variant never reached the target
    target: float  # the baseline's final envelope loss (running-max accuracy for accuracy_speedup)
    lower_bound: bool = False  # the variant was below the target at its first point: the speedup is at least this

    @property
    def reached(self) -> bool:
        return self.value is not None


def speedup(baseline: Curve, variant: Curve) -> Speedup:
    """How many times fewer FLOPs the variant needs to reach the baseline's final loss (docs/definitions.md#speedup)."""
    target = envelope(baseline).final_loss
    reach = flops_to_reach(variant, target)
    if reach.flops is None:
        return Speedup(None, target)
    return Speedup(baseline.final_flops / reach.flops, target, reach.at_first_point)


# Two runs of one budget end up to one optimizer step apart (each buys whole steps of its own size): a variant
# whose curve ends this close short of the baseline's final FLOPs is read at its own end.
SAME_BUDGET_TOLERANCE = 0.01


def loss_gap(baseline: Curve, variant: Curve) -> float | None:
    """The variant's loss minus the baseline's, at the baseline's final FLOPs (negative: the variant is better);
    None if the variant's curve does not span that point (SAME_BUDGET_TOLERANCE aside)."""
    at = baseline.final_flops
    if variant.final_flops < at <= variant.final_flops * (1 + SAME_BUDGET_TOLERANCE):
        at = variant.final_flops
    loss = loss_at(variant, at)
    return None if loss is None else loss - envelope(baseline).final_loss


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # number of values (seeds) behind it; 1: no interval

    def fmt(self, digits: int = 3, suffix: str = "") -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f}{suffix} (1 seed)"
        return f"{self.mean:.{digits}f}{suffix} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap(values, level: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> Interval:
    """Mean of per-seed values and its percentile bootstrap interval (resampling seeds with replacement)."""
    v = np.asarray([x for x in values], dtype=np.float64)
    if not len(v):
        raise ValueError("bootstrap of no values")
    if len(v) == 1:
        return Interval(float(v[0]), float(v[0]), float(v[0]), 1)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return Interval(float(v.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)), len(v))


# Two-sided 95% Student t quantiles t_0.975(df) for df 1..30, then 40, 60, 120 (standard tables): no scipy needed.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(df: int) -> float:
    """t_0.975 with `df` degrees of freedom. Between table rows the next smaller df's value (the quantile falls
    with df, so the interval is never narrower than the exact one); 1.96 only past 120."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df > 120:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def t_interval(values) -> Interval:
    """Mean over seeds with its Student t 95% interval (df = n - 1). One value: no interval (low = high = mean,
    n = 1; callers say so rather than show a width of zero)."""
    v = np.asarray(list(values), dtype=np.float64)
    if not len(v):
        raise ValueError("t interval of no values")
    mean = float(v.mean())
    if len(v) == 1:
        return Interval(mean, mean, mean, 1)
    half = t_quantile(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return Interval(mean, mean - half, mean + half, len(v))


def spread(values) -> float | None:
    """Sample standard deviation over seeds (ddof = 1); None for one seed."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.std(ddof=1)) if len(v) > 1 else None


NO_DIFFERENCE = "no detectable difference"
ONE_SEED = "1 seed: no interval"


def verdict(low: float, high: float, null: float, above: str, below: str) -> str:
    """`above` or `below` when the whole interval lies on one side of `null`; an interval that includes it
    cannot tell the two apart from noise."""
    if low > null:
        return above
    if high < null:
        return below
    return NO_DIFFERENCE


def fmt_ends(low: float | None, high: float | None) -> str:
    """A censored interval's ends, a not-reached end in words: '[not reached, 3.00]'."""
    return "[" + ", ".join("not reached" if v is None else f"{v:.2f}" for v in (low, high)) + "]"


@dataclass(frozen=True)
class CensoredMedian:
    """A per-seed quantity some seeds never reached (a speedup to a target a seed's curve never got to): the median
    over seeds with not-reached seeds ranked below every reached value, and its percentile bootstrap interval over
    seeds. None in median/low/high: a not-reached value; with one seed low and high are None (no interval)."""
    median: float | None
    low: float | None
    high: float | None
    reached: int
    seeds: int
    lower_bound: bool  # the median rests on a value that is only a bound (reached at the first evaluation): >=

    def verdict(self) -> str:
        """Above or below 1.0x; a not-reached end counts as below every reached value and below 1.0x (a curve
        that never reaches the target within its run needs more FLOPs than the baseline spent on it)."""
        if self.seeds == 0:
            return "n/a"
        if self.seeds == 1:
            return ONE_SEED
        low, high = (-math.inf if v is None else v for v in (self.low, self.high))
        return verdict(low, high, 1.0, "faster", "slower")

    def fmt(self) -> str:
        if self.seeds == 0:
            return "n/a (no baseline)"
        reached = f"reached {self.reached}/{self.seeds} seeds"
        if self.median is None:
            return f"not reached (median); {reached}"
        value = ("≥ " if self.lower_bound else "") + f"{self.median:.2f}x"
        if self.seeds == 1:
            return f"{value} (1 seed: no interval); {reached}"
        return f"{value} {fmt_ends(self.low, self.high)}; {reached}"

    def as_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "reached": self.reached,
                "seeds": self.seeds, "lower_bound": self.lower_bound, "verdict": self.verdict()}


def _ranked(values) -> np.ndarray:
    """Not reached (None) as -inf: below every reached value, and a median of it with any value stays -inf."""
    return np.array([-math.inf if v is None else float(v) for v in values], dtype=np.float64)


def _censored_ends(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap samples that may be -inf (not reached). Order statistics, not
    interpolation: interpolating towards -inf is undefined, and the outer statistic never narrows the interval."""
    tail = (1 - level) / 2
    low = float(np.quantile(samples, tail, method="lower"))
    high = float(np.quantile(samples, 1 - tail, method="higher"))
    return (None if low == -math.inf else low), (None if high == -math.inf else high)


def censored_median(values, lower_bounds=None, level: float = 0.95, n_resamples: int = 10000,
                    seed: int = 0) -> CensoredMedian:
    """`values`: one per seed, None where the seed never reached the target; `lower_bounds`: which reached values
    are only bounds. The median of an even count averages the two middle values (not reached if either is)."""
    values = list(values)
    flags = list(lower_bounds) if lower_bounds is not None else [False] * len(values)
    reached = sum(v is not None for v in values)
    if not values:
        return CensoredMedian(None, None, None, 0, 0, False)
    keys = _ranked(values)
    middle = np.argsort(keys, kind="stable")[[(len(keys) - 1) // 2, len(keys) // 2]]
    median = float(keys[middle].mean())
    low, high = _median_ends(keys, level, n_resamples, seed)
    if median == -math.inf:
        return CensoredMedian(None, low, high, reached, len(values), False)
    return CensoredMedian(median, low, high, reached, len(values), any(flags[i] for i in middle))


def _median_ends(keys: np.ndarray, level: float, n_resamples: int, seed: int) -> tuple[float | None, float | None]:
    if len(keys) == 1:
        return None, None
    rng = np.random.default_rng(seed)
    return _censored_ends(np.median(keys[rng.integers(0, len(keys), size=(n_resamples, len(keys)))], axis=1), level)


def mean_curve(points) -> Curve:
    """A curve from (FLOPs, loss) pairs of several seeds: the mean loss at each FLOPs value (curve() alone keeps
    the last seed's)."""
    by_flops: dict[float, list[float]] = {}
    for c, loss in points:
        by_flops.setdefault(c, []).append(loss)
    return curve(list(by_flops), [sum(v) / len(v) for v in by_flops.values()])


def iso_curve(finals) -> Curve:
    """The iso-FLOPs curve of one variant from finished schedules: each budget's (FLOPs used, final loss)."""
    return curve([c for c, _ in finals], [l for _, l in finals])


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A * C^(-alpha), fitted in log space."""
    E: float
    A: float
    alpha: float

    def loss(self, flops: float) -> float:
        return self.E + self.A * flops ** (-self.alpha)

    def flops_for(self, loss: float) -> float | None:
        if loss <= self.E:
            return None
        return (self.A / (loss - self.E)) ** (1 / self.alpha)


MIN_FIT_POINTS = 4  # the law has 3 parameters: through 3 points it passes exactly and its trend says nothing


def fit_power_law(c: Curve, grid: int = 400) -> PowerLaw | None:
    """Least squares in log L over a grid of E in [0, min L): for each E, log(L - E) is linear in log C.
    Needs MIN_FIT_POINTS distinct FLOPs points with decreasing loss (a 3-point curve that drops in a jump once
    'predicted' 0.00x). None otherwise, or when no slope is a decay. All grid values of E are solved at once
    (closed-form line fits): the extrapolation's bootstrap refits hundreds of times."""
    if len(c) < MIN_FIT_POINTS or c.loss.min() >= c.loss.max():
        return None
    x = np.log(c.flops)
    E = np.linspace(0, c.loss.min() * (1 - 1e-6), grid)[:, None]
    y = np.log(c.loss - E)
    dx = x - x.mean()
    slope = (y - y.mean(axis=1, keepdims=True)) @ dx / (dx @ dx)
    intercept = y.mean(axis=1) - slope * x.mean()
    pred = E + np.exp(intercept[:, None] + slope[:, None] * x)
    sse = np.where(slope < 0, ((np.log(pred) - np.log(c.loss)) ** 2).sum(axis=1), np.inf)
    best = int(np.argmin(sse))
    if not np.isfinite(sse[best]):
        return None
    return PowerLaw(float(E[best, 0]), float(np.exp(intercept[best])), float(-slope[best]))


def r_squared(c: Curve, law: PowerLaw) -> float:
    """Share of the variance of log L that the law explains (the fit minimises the error in log L)."""
    log_l = np.log(c.loss)
    sse = float(((np.log(law.loss(c.flops)) - log_l) ** 2).sum())
    return 1 - sse / float(((log_l - log_l.mean()) ** 2).sum())


# Fit-quality gate of an extrapolation. A clean power law with a few % noise per evaluation explains well over
# 99% of the variance of log L; below 95% the residuals are a sizeable share of the whole drop (typically a curve
# still on the unigram plateau, or one that flattens), so the law does not describe the curve and its trend at
# 10x-100x the compute would be a guess.
MIN_FIT_R2 = 0.95
ALPHA_RANGE = (0.01, 2.0)  # scaling exponents of LM losses are ~0.05-0.5; outside this the fit is degenerate
# Widest bootstrap interval (high / low) an extrapolated speedup may have: wider, the seeds disagree by an order
# of magnitude about the trend and any single number would overstate what they say.
MAX_EXTRAPOLATION_SPAN = 10.0


@dataclass(frozen=True)
class Fit:
    """A power-law fit of a seed-mean curve and the first quality check it fails ("" = it passes them all)."""
    law: PowerLaw | None
    r2: float | None
    problem: str

    def as_dict(self) -> dict | None:
        return None if self.law is None else {**self.law.__dict__, "r2": self.r2}


def fit_problem(c: Curve, law: PowerLaw | None, name: str) -> str:
    """The first check of the gate that a fit of `c` fails, "" when none: enough distinct points, a decaying law,
    R^2 in log L >= MIN_FIT_R2, E below the smallest observed loss (else the law claims a floor the curve has
    already passed; fit_power_law's grid keeps E below it, the gate does not rely on that), alpha in ALPHA_RANGE."""
    if len(c) < MIN_FIT_POINTS:
        return f"fit has {len(c)} distinct points < {MIN_FIT_POINTS} for {name}"
    if law is None:
        return f"no decaying power law fits {name}"
    r2 = r_squared(c, law)
    if r2 < MIN_FIT_R2:
        return f"fit R^2 {r2:.2f} < {MIN_FIT_R2} for {name}"
    if law.E >= c.loss.min():
        return f"fitted E {law.E:.4g} not below the smallest observed loss {c.loss.min():.4g} for {name}"
    if not ALPHA_RANGE[0] <= law.alpha <= ALPHA_RANGE[1]:
        return f"fitted alpha {law.alpha:.3g} outside [{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}] for {name}"
    return ""


def checked_fit(c: Curve, name: str) -> Fit:
    """fit_power_law of `c` and its gate (fit_problem)."""
    law = fit_power_law(c)
    return Fit(law, None if law is None else r_squared(c, law), fit_problem(c, law, name))


def predicted_speedup(baseline: PowerLaw, variant: PowerLaw, at_flops: float) -> float | None:
    """EXTRAPOLATION: the speedup the fitted trends predict at `at_flops` of baseline compute. None where the
    variant's trend never reaches the baseline's predicted loss."""
    needed = variant.flops_for(baseline.loss(at_flops))
    return None if needed is None else at_flops / needed


@dataclass(frozen=True)
class Extrapolated:
    """A predicted speedup at `factor` x the largest budget, with its bootstrap interval over seeds; withheld
    (value and interval None) with the reason when a check fails."""
    factor: float
    speedup: float | None  # None: withheld, or the variant's trend never reaches the baseline's predicted loss
    low: float | None
    high: float | None
    withheld: str  # the failed check; "" = reported

    @property
    def status(self) -> str:
        return "withheld" if self.withheld else "reported"

    def fmt(self) -> str:
        if self.withheld:
            return f"withheld: {self.withheld}"
        return ("not reached" if self.speedup is None else f"{self.speedup:.2f}x") + " " + fmt_ends(self.low, self.high)


def mean_of(curves: list[Curve]) -> Curve:
    """The seed-mean curve of several seeds' curves (mean loss at each FLOPs value)."""
    return mean_curve(p for c in curves for p in zip(c.flops.tolist(), c.loss.tolist()))


def extrapolate(baseline: list[Curve], variant: list[Curve], names: tuple[str, str], top_flops: float,
                factors=(10, 100), level: float = 0.95, n_resamples: int = 1000,
                seed: int = 0) -> tuple[Fit, Fit, list[Extrapolated]]:
    """EXTRAPOLATION of the speedup of `variant` over `baseline` at factor x `top_flops`, from power-law fits of
    their seed-mean curves (`baseline[i]` and `variant[i]`: the same seed). The interval resamples seeds with
    replacement, refits both seed-mean curves and predicts again; not-reached predictions are censored (rank
    lowest). Withheld when a fit fails the gate (checked_fit), with fewer than 2 seeds, when a resample cannot
    be fitted, or when the interval spans more than MAX_EXTRAPOLATION_SPAN. Returns (baseline Fit, variant Fit,
    [Extrapolated per factor])."""
    fits = checked_fit(mean_of(baseline), names[0]), checked_fit(mean_of(variant), names[1])
    problem = fits[0].problem or fits[1].problem or ("" if len(baseline) >= 2 else "1 seed, no interval")
    if problem:
        return (*fits, [Extrapolated(k, None, None, None, problem) for k in factors])
    samples = _resampled_predictions(baseline, variant, [top_flops * k for k in factors], n_resamples, seed)
    if samples is None:
        return (*fits, [Extrapolated(k, None, None, None, "a seed resample has no decaying power-law fit")
                        for k in factors])
    out = []
    for k, column in zip(factors, samples.T):
        point = predicted_speedup(fits[0].law, fits[1].law, top_flops * k)
        low, high = _censored_ends(column, level)
        problem = _span_problem(low, high)
        out.append(Extrapolated(k, None, None, None, problem) if problem else Extrapolated(k, point, low, high, ""))
    return (*fits, out)


def _span_problem(low: float | None, high: float | None) -> str:
    if high is None or (low is not None and high <= MAX_EXTRAPOLATION_SPAN * low):
        return ""  # all resamples agree it is not reached, or a bounded interval
    return f"interval {fmt_ends(low, high)} spans more than {MAX_EXTRAPOLATION_SPAN:g}x"


def _resampled_predictions(baseline, variant, at_flops, n_resamples, seed) -> np.ndarray | None:
    """Predicted speedups (-inf: not reached) per seed resample (rows) and FLOPs point (columns); None when a
    resample's curves cannot be fitted. Resamples with the same multiset of seeds share their fits."""
    rng = np.random.default_rng(seed)
    cache: dict[tuple, list[float] | None] = {}
    rows = []
    for idx in rng.integers(0, len(baseline), size=(n_resamples, len(baseline))):
        key = tuple(sorted(idx.tolist()))
        if key not in cache:
            laws = [fit_power_law(mean_of([curves[i] for i in key])) for curves in (baseline, variant)]
            cache[key] = None if None in laws else [
                -math.inf if (v := predicted_speedup(laws[0], laws[1], c)) is None else v for c in at_flops]
        if cache[key] is None:
            return None
        rows.append(cache[key])
    return np.array(rows)


def wilson(correct: int, total: int, z: float = 1.96) -> Interval:
    """An accuracy (correct/total) with its Wilson score 95% interval: sound at 0 or 1 and for few problems."""
    if total <= 0:
        raise ValueError("wilson of no problems")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # clamped so that rounding never puts the rate outside its own interval (at 0 and 1 it is an end point)
    return Interval(p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)), total)


def newcombe(correct_a: int, total_a: int, correct_b: int, total_b: int) -> Interval:
    """Difference of two independent proportions a - b with Newcombe's hybrid score 95% interval (method 10 of
    Newcombe 1998, built from the two Wilson intervals). It covers binomial sampling noise only, not the spread
    between training seeds. `n` is the smaller problem count."""
    a, b = wilson(correct_a, total_a), wilson(correct_b, total_b)
    d = a.mean - b.mean
    return Interval(d, d - math.hypot(a.mean - a.low, b.high - b.mean), d + math.hypot(a.high - a.mean, b.mean - b.low),
                    min(total_a, total_b))


@dataclass(frozen=True)
class AccuracyCurve:
    """Held-out accuracy (in [0, 1], higher is better) against cumulative training FLOPs."""
    flops: np.ndarray  # strictly increasing
    accuracy: np.ndarray

    @property
    def final_flops(self) -> float:
        return float(self.flops[-1])

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1])


def accuracy_curve(flops, accuracies) -> AccuracyCurve:
    """Like curve(), but an accuracy of 0 is a real point: only non-finite values and non-positive FLOPs drop."""
    pts = {}
    for c, a in zip(flops, accuracies):
        c, a = float(c), float(a)
        if math.isfinite(c) and math.isfinite(a) and c > 0:
            pts[c] = a
    if not pts:
        raise ValueError("an accuracy curve needs at least one finite point with positive FLOPs")
    xs = sorted(pts)
    return AccuracyCurve(np.array(xs), np.array([pts[x] for x in xs]))


def mean_accuracy_curve(points) -> AccuracyCurve:
    """(FLOPs, accuracy) pairs of several seeds: the mean accuracy at each FLOPs value."""
    by_flops: dict[float, list[float]] = {}
    for c, a in points:
        by_flops.setdefault(c, []).append(a)
    return accuracy_curve(list(by_flops), [sum(v) / len(v) for v in by_flops.values()])


def running_max(c: AccuracyCurve) -> AccuracyCurve:
    """The monotone (non-decreasing) envelope: the best accuracy reached by each point."""
    return AccuracyCurve(c.flops, np.maximum.accumulate(c.accuracy))


def flops_to_reach_accuracy(c: AccuracyCurve, target: float) -> Reach:
    """FLOPs at which the running maximum first reaches `target`, interpolated linearly in log C against
    accuracy (an accuracy can be 0: no log of it); never past the curve's ends."""
    e = running_max(c)
    if e.accuracy[0] >= target:
        return Reach(float(e.flops[0]), at_first_point=True)
    above = np.nonzero(e.accuracy >= target)[0]
    if not len(above):
        return Reach(None)
    i = int(above[0])
    frac = (target - e.accuracy[i - 1]) / (e.accuracy[i] - e.accuracy[i - 1])  # a[i-1] < target <= a[i]
    c0, c1 = float(e.flops[i - 1]), float(e.flops[i])
    # exp(log(c0)) can round to just below c0 (c0=44, frac~1e-38: 43.99999999999999, found by hypothesis,
    # tests/test_properties.py): keep the interpolation between the two points it interpolates
    return Reach(min(max(math.exp(math.log(c0) + frac * math.log(c1 / c0)), c0), c1))


def accuracy_speedup(baseline: AccuracyCurve, variant: AccuracyCurve) -> Speedup:
    """How many times fewer FLOPs the variant needs to reach the baseline's final (running-max) accuracy."""
    target = running_max(baseline).final_accuracy
    reach = flops_to_reach_accuracy(variant, target)
    if reach.flops is None:
        return Speedup(None, target)
    return Speedup(baseline.final_flops / reach.flops, target, reach.at_first_point)


def compute_saved(fixed: list[tuple[float, float]], flops: float, accuracy: float) -> float | None:
    """Share of inference compute an adaptive schedule saves at equal quality: 1 - its FLOPs over those of the
    cheapest fixed loop count reaching at least its accuracy (`fixed`: (FLOPs, accuracy) pairs). Negative when
    it costs more; None when no fixed count is as accurate."""
    enough = [f for f, a in fixed if a >= accuracy]
    return 1 - flops / min(enough) if enough else None
