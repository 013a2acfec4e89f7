"""Loop counts drawn per optimizer step in training (train.loop_sampling), so a model learns to use more or
fewer loops than its nominal count: with a fixed count, extra loops at inference made validation loss worse in
every sweep measured so far.

    fixed                      every step runs model.n_loops (the default)
    uniform:LO:HI              n_loops ~ U{LO, ..., HI}
    poisson_lognormal:MEAN:SIGMA
                               Huginn's recurrence sampler (Geiping et al. 2025, eq. 2): tau ~ N(log(MEAN - 1)
                               - SIGMA^2/2, SIGMA), n_loops = 1 + Poisson(e^tau). E[e^tau] = MEAN - 1, so
                               E[n_loops] = MEAN (Huginn writes the mean of the Poisson rate, r-bar = MEAN - 1
                               here, so that one pass is always run); the tail is heavy, nothing is clipped.

A step's draw is a function of (train.seed, step) alone, so a resumed run draws exactly what an uninterrupted
one did, and the whole sequence of draws is known before training: the run plan (plan.py) sums their FLOPs
to find the step at which the budget is spent.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

FORMS = "fixed, uniform:LO:HI or poisson_lognormal:MEAN:SIGMA"


@dataclass(frozen=True)
class Sampler:
    kind: str  # fixed | uniform | poisson_lognormal
    a: float = 0.0  # uniform: LO; poisson_lognormal: MEAN
    b: float = 0.0  # uniform: HI; poisson_lognormal: SIGMA

    def mean(self, n_loops: int) -> float:
        """E[n_loops] per step (`n_loops`: the model's nominal count, what `fixed` runs)."""
        if self.kind == "fixed":
            return float(n_loops)
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a

    def draw(self, seed: int, step: int) -> int:
        """The loop count of optimizer step `step` (0-based): a function of (seed, step) only."""
        rng = np.random.default_rng(_step_seed(seed, step))
        if self.kind == "uniform":
            return int(rng.integers(int(self.a), int(self.b) + 1))
        tau = rng.normal(np.log(self.a - 1) - self.b ** 2 / 2, self.b)
        return 1 + int(rng.poisson(np.exp(tau)))


def trains_one_pass(n_loops: int, spec: str) -> bool:
    """Whether every training step runs the looped block once (a baseline, or a loop config that never loops).
    Such a model never learned to loop: inference at more passes repeats layers it was not trained to repeat
    (for a plain baseline, its whole stack), so evaluations score it at its one pass only."""
    sampler = parse(spec)
    if sampler.kind == "fixed":
        return n_loops == 1
    return sampler.kind == "uniform" and sampler.b == 1


def _step_seed(seed: int, step: int) -> int:
    # Its own stream, apart from the masks' (train.step_generator): drawing loops never shifts a mask.
    return int.from_bytes(hashlib.sha256(f"loopmdm-loops:{seed}:{step}".encode()).digest()[:8], "little")


def parse(spec: str) -> Sampler:
    """A Sampler from its string; ConfigError naming the forms when it is not one."""
    name, *args = spec.split(":")
    try:
        values = [float(a) for a in args]
    except ValueError:
        values = None
    if name == "fixed" and not args:
        return Sampler("fixed")
    if name == "uniform" and values and len(values) == 2 and all(v.is_integer() for v in values) \
            and 1 <= values[0] <= values[1]:
        return Sampler("uniform", values[0], values[1])
    if name == "poisson_lognormal" and values and len(values) == 2 and values[0] > 1 and values[1] > 0:
        return Sampler("poisson_lognormal", values[0], values[1])
    raise ConfigError(f"train.loop_sampling: {spec!r} is not one of {FORMS} (integers 1 <= LO <= HI; MEAN > 1, "
                      f"SIGMA > 0)")
