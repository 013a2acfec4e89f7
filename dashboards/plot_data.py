"""What the figures draw: plain numbers per variant and budget, already summarised over seeds. The figures know
nothing of sweeps, trials or comparisons; whoever calls them turns those into these."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A value and the two ends of its interval."""
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Series:
    """A variant's line in the panel of its budget: the seed mean `ys` at `xs`, and with several seeds the band
    from the lowest (`low`) to the highest seed."""
    label: str
    budget: float
    xs: np.ndarray
    ys: np.ndarray
    seeds: int
    low: np.ndarray | None = None
    high: np.ndarray | None = None


@dataclass(frozen=True)
class SeedLines:
    """A variant whose seeds share no x range, so there is no mean to draw: each seed's own (xs, ys)."""
    label: str
    budget: float
    lines: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def seeds(self) -> int:
        return len(self.lines)


@dataclass(frozen=True)
class Bar:
    """A speedup over seeds: the median and its interval's ends. A None median is censored (the median seed never
    reached the target), a None end lies below every speedup measured (low) or beyond them (high)."""
    median: float | None
    low: float | None
    high: float | None
    reached: int  # seeds that reached the target
    seeds: int
    lower_bound: bool  # the median is only a lower bound (the target was beaten at the first evaluation)

    @property
    def censored(self) -> bool:
        return self.median is None


@dataclass(frozen=True)
class SpeedupBars:
    """A looped config at one budget: its bar against each baseline family it has ('same_size',
    'depth_matched'); one with none still gets its place on the axis."""
    label: str
    budget: float
    bars: dict[str, Bar]


@dataclass(frozen=True)
class FinalLoss:
    """A variant's final loss at one budget and the loop count it trained with."""
    label: str
    variant: str  # 'loop', 'same_size' or 'depth_matched'
    budget: float
    n_loops: int
    loss: Estimate


@dataclass(frozen=True)
class InferenceLoops:
    """A variant's validation loss (seed mean) at each inference loop count, and the count it trained with."""
    label: str
    budget: float
    seeds: int
    trained_loops: int | None
    loss: dict[int, float]


@dataclass(frozen=True)
class AttentionShares:
    """A variant's attention share (seed mean) per layer application, in unrolled order, with the names of the
    applications."""
    label: str
    budget: float
    seeds: int
    layers: tuple[str, ...]
    shares: tuple[float, ...]


@dataclass(frozen=True)
class ScheduleAccuracy:
    """A variant's task accuracy under one inference loop schedule and the forward FLOPs one answer costs."""
    label: str
    budget: float
    schedule: str
    fixed: bool  # a fixed loop count (drawn as a line per variant) rather than an adaptive schedule (a diamond)
    flops_per_answer: float
    accuracy: Estimate
