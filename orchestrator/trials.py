"""A sweep's trials: the variants a validated SweepSpec implies, one typed TrialSpec per (budget, seed, variant,
lr), and the record Ray Tune carries to the worker that trains it.

The path of a trial from the YAML to the model is one way: `spec.load` validates the file, `expand` builds each
trial's complete RunConfig and plans it (the budget's steps: the one check that needs the model's FLOPs) once,
in the driver; `TrialJob.to_dict` serializes the trial once into Tune's param space; the worker's
`TrialJob.from_dict` reads it back and hands its config to the trainer, which builds the model from it.
"""

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass

from loopmdm_core import loop_sampling
from loopmdm_core.config import RunConfig, apply_overrides, from_dict, load_run_config
from loopmdm_core.errors import ConfigError
from loopmdm_core.model import ModelConfig, depth_matched, same_size
from loopmdm_core.plan import RunPlan, plan

from . import tracking
from .spec import Infer, SweepSpec


@dataclass(frozen=True)
class Variant:
    """A model and how it trains, the same at every budget, seed and lr: what the report compares, and what
    an lr ladder chooses one lr for. Its label names it uniquely within a sweep."""
    kind: str  # loop | same_size | depth_matched
    model: ModelConfig
    loop_sampling: str = "fixed"
    loop_backprop: int = 0
    mean_loops: float = 1.0  # E[loop count] of a training step

    @property
    def label(self) -> str:
        return variant_label(self.kind, self.model, self.loop_sampling, self.loop_backprop)

    @property
    def applied_layers(self) -> int:
        """Layer applications per token, the depth of the depth-matched baseline this variant pairs with (the
        report pairs by it): a sampled count's mean, rounded to a whole layer as depth_matched does."""
        return depth_matched(self.model, self.mean_loops).n_layers if self.kind == "loop" else self.model.n_layers


@dataclass(frozen=True)
class TrialSpec:
    key: str  # stable hash of the full run config: the identity of the trial (MLflow tag loopmdm.trial_key)
    variant: str  # loop | same_size | depth_matched
    label: str  # loop[1,3)x2, loop[1,3)x2~uniform:1:3/bp2, same_size(4L), depth_matched(6L)
    group: str  # the trials compared with each other: same budget and seed
    seed: int
    budget_flops: float
    plan: RunPlan  # its config is the trial's, resolved (model.vocab_size filled in from the tokenizer)
    mean_loops: float  # E[loop count] of a training step
    applied_layers: int  # Variant.applied_layers
    lr_ladder: str = ""  # "": no ladder; candidate: a ladder trial (until chosen); chosen: trained at the chosen lr

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def lr(self) -> float:
        return self.config.train.lr

    @property
    def name(self) -> str:
        """The run's name: in a ladder sweep the lr tells apart the trials of one variant at one budget."""
        name = f"{self.label}-b{self.budget_flops:.3g}-s{self.seed}"
        return f"{name}-lr{self.lr:g}" if self.lr_ladder else name

    @property
    def tags(self) -> dict[str, str]:
        tags = {tracking.ROLE_TAG: "trial", tracking.VARIANT_TAG: self.variant, tracking.LABEL_TAG: self.label,
                tracking.GROUP_TAG: self.group, tracking.SEED_TAG: str(self.seed),
                tracking.BUDGET_TAG: f"{self.budget_flops:g}", tracking.TRIAL_KEY_TAG: self.key,
                tracking.LR_TAG: str(self.lr)}
        return {**tags, tracking.LADDER_TAG: self.lr_ladder} if self.lr_ladder else tags

    @property
    def derived(self) -> dict:
        """MLflow params the config implies. applied_layers is the (rounded mean) depth the report pairs a loop
        with its depth-matched baseline by; flops_per_token is the mean over the run's steps when sampled."""
        return {"derived.params": self.plan.params, "derived.flops_per_token": self.plan.flops_per_token,
                "derived.steps": self.plan.steps, "derived.applied_layers": self.applied_layers,
                "derived.mean_loops": self.mean_loops}


def trial_key(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def variant_label(variant: str, model, sampling: str = "fixed", backprop: int = 0) -> str:
    if variant == "loop":
        label = f"loop[{model.loop_start},{model.loop_end})x{model.n_loops}"
        label += "" if sampling == "fixed" else f"~{sampling}"
        return label + (f"/bp{backprop}" if backprop else "")
    return f"{variant}({model.n_layers}L)"


# ---------------------------------------------------------------------------------------------- expansion

def variants(spec: SweepSpec) -> list[Variant]:
    """Each looped variant followed by its baselines, in the order of loops:, each distinct one once (a baseline
    shared by several loop configs is one variant). The baselines train with fixed loops and full backprop;
    a sampled loop's depth-matched baseline has its mean applied depth, rounded to a whole layer."""
    found: dict[str, Variant] = {}
    for loop in spec.loops:
        model = loop.model(spec.base.model)
        mean = loop_sampling.parse(loop.loop_sampling).mean(loop.n_loops)
        derived = {"same_size": same_size(model), "depth_matched": depth_matched(model, mean_loops=mean)}
        for v in [Variant("loop", model, loop.loop_sampling, loop.loop_backprop, mean)] + \
                 [Variant(name, derived[name]) for name in spec.baselines]:
            found.setdefault(v.label, v)
    return list(found.values())


def _expand(spec: SweepSpec, budgets, lrs_of, lr_ladder: str = "") -> list[TrialSpec]:
    """One TrialSpec per (budget, seed, variant, lr in lrs_of(label)); identical run configs appear once.
    Order: budgets, seeds, then loops each followed by its baselines, then lrs."""
    trials: dict[str, TrialSpec] = {}
    problems = []
    for budget, seed in itertools.product(budgets, spec.seeds):
        group = f"b{budget:.3g}-s{seed}"
        for v in variants(spec):
            for lr in lrs_of(v.label):
                train = dataclasses.replace(spec.base.train, budget_flops=budget, seed=seed, lr=lr,
                                            loop_sampling=v.loop_sampling, loop_backprop=v.loop_backprop)
                cfg = dataclasses.replace(spec.base, model=v.model, train=train)
                key = trial_key(cfg)
                if key in trials:
                    continue
                try:
                    run_plan = plan(cfg)
                except ConfigError as e:
                    problems.extend(f"budgets: {budget:g} for {v.label}: {p}" for p in e.problems)
                    continue
                trials[key] = TrialSpec(key, v.kind, v.label, group, seed, budget, run_plan, v.mean_loops,
                                        v.applied_layers, lr_ladder)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))  # the same budget fails the same way at every seed and lr
    return list(trials.values())


def ladder_budget(spec: SweepSpec) -> float:
    return min(spec.budgets)


def expand(spec: SweepSpec) -> list[TrialSpec]:
    """The trials whose configs are known before any training: all of them; with lr_ladder, the ladder (stage
    1: the smallest budget, every variant at every lr of the ladder, every seed)."""
    if spec.lr_ladder is None:
        return _expand(spec, spec.budgets, lambda label: (spec.base.train.lr,))
    return _expand(spec, (ladder_budget(spec),), lambda label: spec.lr_ladder.values, "candidate")


def later_trials(spec: SweepSpec, chosen: dict[str, float] | None = None) -> list[TrialSpec]:
    """Stage 2 of an lr_ladder sweep (none without a ladder): every larger budget, each variant at the lr
    `chosen` for it by its label (a variant without one, whose every ladder trial failed, has none).
    chosen=None: the ladder's first lr stands in for the choice to come (steps and FLOPs do not depend on the
    lr), for the dry run, and to check every budget before any compute."""
    if spec.lr_ladder is None:
        return []
    larger = tuple(b for b in spec.budgets if b > ladder_budget(spec))
    if chosen is None:
        return _expand(spec, larger, lambda label: spec.lr_ladder.values[:1], "chosen")
    return _expand(spec, larger, lambda label: (chosen[label],) if label in chosen else (), "chosen")


def longest_first(trials: list[TrialSpec]) -> list[TrialSpec]:
    """The order a sweep starts its trials in: the longest expected first (the largest budget, then the most
    optimizer steps), so that the trials left to start when slots free up are the short ones and the sweep does
    not end waiting for one long trial (the longest-processing-time-first rule). Steps break ties because a
    small model's step costs more than its FLOPs say (launch overhead per step): at equal FLOPs the same-size
    baseline, with the most steps, trained longest (96-98 s against 85-91 s on one H200, docs/performance.md)."""
    return sorted(trials, key=lambda t: (-t.budget_flops, -t.plan.steps))  # stable: ties keep their order


# ---------------------------------------------------------------------------------------------- to the worker

@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep invocation shares."""
    tracking_uri: str
    experiment_id: str
    parent_id: str
    cpus: float  # per trial: its torch threads
    workers: int  # data-parallel processes per trial
    checkpoint_root: str  # one folder of core checkpoints per trial key below it
    infer: Infer | None  # the evaluations after training; None: none


@dataclass(frozen=True)
class TrialJob:
    """One trial as Ray Tune carries it to a worker: the trial's identity, its resolved run config and the sweep
    context. `search` is set on an Optuna cell's job: the searcher's sampled values (dotted config keys) make
    each sample a trial of its own (`sampled`)."""
    key: str
    name: str
    tags: dict
    derived: dict
    config: RunConfig
    sweep: SweepContext
    search_metric: str = ""  # an Optuna cell: the Tune metric its searcher needs in every result

    @classmethod
    def of(cls, t: TrialSpec, sweep: SweepContext, search_metric: str = "") -> "TrialJob":
        return cls(t.key, t.name, t.tags, t.derived, t.config, sweep, search_metric)

    @property
    def seed(self) -> int:
        return self.config.train.seed

    def sampled(self, values: dict) -> "TrialJob":
        """The trial an Optuna sample makes of this cell: its config with the sampled values (validated: the
        sample is a config no one has checked yet), its own key (so its own MLflow run), the cell's key kept as a
        tag."""
        cfg = load_run_config(apply_overrides(self.config.to_dict(), [f"{k}={v}" for k, v in values.items()]))
        key = trial_key(cfg)
        tags = {**self.tags, tracking.TRIAL_KEY_TAG: key, tracking.SEARCH_CELL_TAG: self.key,
                tracking.LR_TAG: str(cfg.train.lr)}  # Optuna may have sampled the lr
        return dataclasses.replace(self, key=key, name=f"{self.name}-{key[:6]}", tags=tags, config=cfg)

    def to_dict(self) -> dict:
        """The one serialization: JSON-able, so Tune's experiment state (and its restore) holds plain data."""
        return {"key": self.key, "name": self.name, "tags": self.tags, "derived": self.derived,
                "config": self.config.to_dict(), "sweep": dataclasses.asdict(self.sweep),
                "search_metric": self.search_metric}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialJob":
        sweep = dict(d["sweep"])
        sweep["infer"] = from_dict(Infer, sweep["infer"], "infer") if sweep["infer"] is not None else None
        return cls(d["key"], d["name"], d["tags"], d["derived"], from_dict(RunConfig, d["config"], "config"),
                   SweepContext(**sweep), d["search_metric"])


def job_name(tune_config: dict) -> str:
    """A Tune trial's name, from the param space it was given (Tune's trial name and folder callbacks)."""
    return tune_config["trial"]["name"]


# ---------------------------------------------------------------------------------------------- dry run

def _sampler(t: TrialSpec) -> str:
    train = t.config.train
    cell = train.loop_sampling if train.loop_sampling == "fixed" else f"{train.loop_sampling} (mean {t.mean_loops:g})"
    return cell + (f" bp{train.loop_backprop}" if train.loop_backprop else "")


def trial_table(trials: list[TrialSpec], lr_chosen_at: float | None = None) -> str:
    """The dry-run table: one row per trial, with what it will cost. lr_chosen_at: the trials' lr is not known
    yet, the ladder at that budget will choose it."""
    head = ("variant", "layers", "loop", "loops", "sampler", "params", "FLOPs/token", "steps", "budget", "seed", "lr")
    lr_cell = (lambda t: f"chosen at budget {lr_chosen_at:.3g}") if lr_chosen_at else (lambda t: f"{t.lr:g}")
    rows = []
    for t in trials:
        m = t.config.model
        rows.append((t.label, str(m.n_layers), f"[{m.loop_start},{m.loop_end})", str(m.n_loops), _sampler(t),
                     f"{t.plan.params:,}", f"{t.plan.flops_per_token:.3g}", f"{t.plan.steps:,}",
                     f"{t.budget_flops:.3g}", str(t.seed), lr_cell(t)))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])


def dry_run_text(spec: SweepSpec, trials: list[TrialSpec], later: list[TrialSpec]) -> str:
    """What --dry-run prints after the summary line: the trial table(s), and how what is not fixed yet is set."""
    parts = []
    if spec.lr_ladder is None:
        parts.append(trial_table(trials))
    else:
        budget = ladder_budget(spec)
        lrs = ", ".join(f"{lr:g}" for lr in spec.lr_ladder.values)
        parts.append(f"stage 1, the lr ladder ({len(trials)} trials): every variant at lr {lrs}, every seed, "
                     f"at budget {budget:.3g}\n" + trial_table(trials))
        parts.append(f"stage 2 ({len(later)} trials), decided after stage 1: each variant at the lr with the lowest "
                     f"final validation loss averaged over seeds at budget {budget:.3g}"
                     + ("\n" + trial_table(later, lr_chosen_at=budget) if later else " (no larger budget: none)"))
    if any(loop.loop_sampling != "fixed" for loop in spec.loops):
        parts.append("note: a sampled loop count's depth_matched baseline has n_layers + (loop_end - loop_start) x "
                     "(mean loops - 1) plain layers, rounded to the nearest layer (halves up); FLOPs/token is the "
                     "mean over the run's steps")
    return "\n\n".join(parts)
