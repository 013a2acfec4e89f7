"""Loop schedules for sampling: how many times the looped block runs at each sampling step.

A schedule is called once per network call with the step index, the number of steps and each row's confidence
after the previous call (a float64 tensor: the mean over the row's still-masked positions of the highest token
probability; NaN before its first call). It returns one loop count for every row, a tensor of one per row, or a
`Converge` request: each row loops until the looped block's output on it stops changing. A row's count depends
on that row alone, so a batch gets the answers its rows get one at a time (sample.py).
Written as strings in configs and on the command line: fixed:K, ramp:FIRST:LAST, table:K1,K2,...,
confidence:LOW:HIGH:THRESHOLD, convergence:TOL:MIN:MAX.
"""

from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Converge:
    tol: float
    min_loops: int
    max_loops: int


@dataclass(frozen=True)
class Fixed:
    k: int

    def __call__(self, step: int, n_steps: int, confidence: torch.Tensor) -> int:
        return self.k


@dataclass(frozen=True)
class ByStep:
    """A table of loop counts over the sampling steps, stretched to however many steps the sampler takes
    (`ramp:FIRST:LAST` is the linear table from FIRST to LAST)."""
    table: tuple[int, ...]

    def __call__(self, step: int, n_steps: int, confidence: torch.Tensor) -> int:
        return self.table[min(len(self.table) - 1, step * len(self.table) // max(1, n_steps))]


@dataclass(frozen=True)
class ByConfidence:
    """Per row: HIGH loops while the model is unsure of it (its previous mean max-probability below THRESHOLD,
    or none yet), else LOW."""
    low: int
    high: int
    threshold: float

    def __call__(self, step: int, n_steps: int, confidence: torch.Tensor) -> torch.Tensor:
        sure = confidence >= self.threshold  # NaN compares False: unsure
        return torch.where(sure, self.low, self.high)


@dataclass(frozen=True)
class ByConvergence:
    tol: float
    min_loops: int
    max_loops: int

    def __call__(self, step: int, n_steps: int, confidence: torch.Tensor) -> Converge:
        return Converge(self.tol, self.min_loops, self.max_loops)


def parse(spec: str):
    """A schedule from its string form; ConfigError naming the accepted forms otherwise."""
    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    try:
        if kind == "fixed" and len(args) == 1:
            schedule = Fixed(int(args[0]))
            counts = [schedule.k]
        elif kind == "ramp" and len(args) == 2:
            first, last = int(args[0]), int(args[1])
            step = 1 if last >= first else -1
            schedule = ByStep(tuple(range(first, last + step, step)))
            counts = list(schedule.table)
        elif kind == "table" and len(args) == 1:
            schedule = ByStep(tuple(int(k) for k in args[0].split(",")))
            counts = list(schedule.table)
        elif kind == "confidence" and len(args) == 3:
            schedule = ByConfidence(int(args[0]), int(args[1]), float(args[2]))
            counts = [schedule.low, schedule.high]
        elif kind == "convergence" and len(args) == 3:
            schedule = ByConvergence(float(args[0]), int(args[1]), int(args[2]))
            counts = [schedule.min_loops, schedule.max_loops]
            if schedule.min_loops > schedule.max_loops:
                raise ValueError
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(f"loop schedule {spec!r}: expected fixed:K, ramp:FIRST:LAST, table:K1,K2,..., "
                          f"confidence:LOW:HIGH:THRESHOLD or convergence:TOL:MIN:MAX") from None
    if min(counts) < 1:
        raise ConfigError(f"loop schedule {spec!r}: loop counts must be >= 1")
    return schedule
