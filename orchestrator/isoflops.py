"""The iso-FLOPs math of DESIGN.md ("Speedup"): pure functions of loss-vs-FLOPs curves, no I/O.

A curve is validation loss against cumulative training FLOPs. It is made monotone (running minimum: the best
loss reached so far) before anything is read off it. FLOPs between two evaluations are interpolated linearly
in log C against log L; nothing is ever extrapolated past a curve's ends: a target a curve never reaches
is reported as not reached, and a target it already beats at its first point gives a bound, flagged.
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
    target: float  # the baseline's final (envelope) loss
    lower_bound: bool = False  # the variant was below the target at its first point: the speedup is at least this

    @property
    def reached(self) -> bool:
        return self.value is not None


def speedup(baseline: Curve, variant: Curve) -> Speedup:
    """How many times fewer FLOPs the variant needs to reach the baseline's final loss (DESIGN.md)."""
    target = envelope(baseline).final_loss
    reach = flops_to_reach(variant, target)
    if reach.flops is None:
        return Speedup(None, target)
    return Speedup(baseline.final_flops / reach.flops, target, reach.at_first_point)


def loss_gap(baseline: Curve, variant: Curve) -> float | None:
    """The variant's loss minus the baseline's, at the baseline's final FLOPs (negative: the variant is better);
    None if the variant's curve does not span that point."""
    at = loss_at(variant, baseline.final_flops)
    return None if at is None else at - envelope(baseline).final_loss


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


def fit_power_law(c: Curve, grid: int = 400) -> PowerLaw | None:
    """Least squares in log L over a grid of E in [0, min L): for each E, log(L - E) is linear in log C.
    Needs 4 distinct FLOPs points with decreasing loss: the law has 3 parameters, so through 3 points it passes
    exactly and its trend says nothing (a 3-point curve that drops in a jump once 'predicted' 0.00x). None
    otherwise, or when the best slope is not a decay."""
    if len(c) < 4 or c.loss.min() >= c.loss.max():
        return None
    x, best = np.log(c.flops), None
    for E in np.linspace(0, c.loss.min() * (1 - 1e-6), grid):
        y = np.log(c.loss - E)
        slope, intercept = np.polyfit(x, y, 1)
        if slope >= 0:
            continue
        pred = E + np.exp(intercept + slope * x)
        sse = float(((np.log(pred) - np.log(c.loss)) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, PowerLaw(float(E), float(np.exp(intercept)), float(-slope)))
    return best[1] if best else None


def predicted_speedup(baseline: PowerLaw, variant: PowerLaw, at_flops: float) -> float | None:
    """EXTRAPOLATION: the speedup the fitted trends predict at `at_flops` of baseline compute. None where the
    variant's trend never reaches the baseline's predicted loss."""
    needed = variant.flops_for(baseline.loss(at_flops))
    return None if needed is None else at_flops / needed


def wilson(correct: int, total: int, z: float = 1.96) -> Interval:
    """An accuracy (correct/total) with its Wilson score 95% interval: sound at 0 or 1 and for few problems."""
    if total <= 0:
        raise ValueError("wilson of no problems")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # clamped so that rounding never puts the rate outside its own interval (at 0 and 1 it is an end point)
    return Interval(p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)), total)


def compute_saved(fixed: list[tuple[float, float]], flops: float, accuracy: float) -> float | None:
    """Share of inference compute an adaptive schedule saves at equal quality: 1 - its FLOPs over those of the
    cheapest fixed loop count reaching at least its accuracy (`fixed`: (FLOPs, accuracy) pairs). Negative when
    it costs more; None when no fixed count is as accurate."""
    enough = [f for f, a in fixed if a >= accuracy]
    return 1 - flops / min(enough) if enough else None
