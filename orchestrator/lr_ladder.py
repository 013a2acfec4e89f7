"""The lr ladder's choice: each variant's learning rate, from the final metrics of its ladder trials.

Pure: the sweep driver reads the ladder runs back from MLflow and calls `choose_lrs`; a resumed sweep reads the
same runs and so makes the same choice.
"""

import math
from collections import defaultdict
from dataclasses import dataclass

from loopmdm_core import metrics


@dataclass(frozen=True)
class LadderRun:
    """A ladder trial as the tracking store holds it once stage 1 is over (one per variant, lr and seed)."""
    label: str
    lr: float
    final: dict | None  # its final metric values (MLflow's latest); None: it did not finish


@dataclass(frozen=True)
class LrChoice:
    metric: str  # what chose: val/answer_loss when every finished ladder trial has it, else val/loss
    means: dict  # label -> {lr: final metric averaged over seeds; None when a seed's trial did not finish}
    chosen: dict  # label -> lr with the lowest mean (ties: the smaller lr); absent: no lr finished every seed

    def as_dict(self) -> dict:
        return {"metric": self.metric,
                "variants": {label: {"chosen": self.chosen.get(label),
                                     "mean_loss": {str(lr): mean for lr, mean in row.items()}}
                             for label, row in self.means.items()}}


def choose_lrs(runs: list[LadderRun]) -> LrChoice:
    """Each variant's lr: the lowest final validation loss averaged over seeds. An lr at which some seed did not
    finish (diverged, failed) is not eligible. Pure, and independent of the order of `runs` (fsum), so a resumed
    sweep computes exactly the choice its first invocation did."""
    finished = [r.final for r in runs if r.final is not None]
    metric = metrics.VAL_ANSWER_LOSS if finished and all(metrics.VAL_ANSWER_LOSS in f for f in finished) \
        else metrics.VAL_LOSS
    losses: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        value = (r.final or {}).get(metric)
        losses[r.label][r.lr].append(value if value is not None and math.isfinite(value) else None)
    means = {label: {lr: None if None in values else math.fsum(values) / len(values)
                     for lr, values in sorted(row.items())} for label, row in losses.items()}
    chosen = {label: min((mean, lr) for lr, mean in row.items() if mean is not None)[1]
              for label, row in means.items() if any(mean is not None for mean in row.values())}
    return LrChoice(metric, means, chosen)
