"""The run plan: what a run will do, known from its config before any data is read.

The FLOPs budget buys a whole number of optimizer steps (flops.py); the plan fixes them, their cumulative
FLOPs, and the steps at which the run evaluates and checkpoints. The trainer follows it; the sweep's dry-run
and the CLI print it.
"""

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from . import flops, loop_sampling
from .config import RunConfig
from .errors import ConfigError
from .tokenizer import mask_id, model_vocab_size


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill in what the config derives: the model's vocabulary from the tokenizer (+ mask token, padded)."""
    needed = model_vocab_size(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    if cfg.model.vocab_size == 0:
        return cfg.with_model(dataclasses.replace(cfg.model, vocab_size=needed))
    if cfg.model.vocab_size <= mask_id(cfg.data.tokenizer, cfg.data.bpe_vocab_size):
        raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} leaves no room for the tokenizer's ids and "
                          f"the mask token; use 0 (derive it) or at least {needed}")
    return cfg


@dataclass(frozen=True)
class RunPlan:
    """What a run will do. With a sampled loop count (train.loop_sampling) every step's draw is known in
    advance (loop_sampling.py), so the steps, their cumulative FLOPs and the evaluation points are exact too."""
    config: RunConfig  # resolved
    params: int
    flops_per_token: int  # training FLOPs per token (3 x forward); sampled loops: the mean over the run's steps
    tokens_per_step: int
    flops_per_step: int  # sampled loops: the mean over the run's steps (rounded)
    steps: int
    eval_steps: tuple[int, ...]
    checkpoint_steps: tuple[int, ...]
    loops: tuple[int, ...] = ()  # sampled loop count of each step; (): every step runs model.n_loops
    cumulative: tuple[int, ...] = ()  # sampled loops: training FLOPs after steps 1..steps

    @property
    def total_flops(self) -> int:
        return self.flops_after(self.steps)

    def flops_after(self, done: int) -> int:
        """Cumulative training FLOPs once `done` steps have run."""
        if not self.loops:
            return done * self.flops_per_step
        return self.cumulative[done - 1] if done else 0

    def loops_at(self, step: int) -> int | None:
        """The loop count step `step` (0-based) runs; None: the model's own."""
        return self.loops[step] if self.loops else None

    def lr_position(self, step: int) -> float:
        """Where step `step` stands in the learning-rate schedule, in steps: with sampled loops, the share of
        the FLOPs spent before it, so the schedule follows compute, not the count of (unequal) steps."""
        return step if not self.loops else self.flops_after(step) / self.total_flops * self.steps


def _sampled_steps(cfg: RunConfig, sampler) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The loop counts and cumulative FLOPs of the steps the budget buys with sampled loop counts: draws in
    order until the next step would overspend."""
    cost, loops, cumulative, total, step = {}, [], [], 0, 0
    while True:
        k = sampler.draw(cfg.train.seed, step)
        if k not in cost:
            cost[k] = flops.train_flops_per_step(cfg.model, cfg.data.seq_len, cfg.train.batch_size, k,
                                                 cfg.train.loop_backprop)
        if total + cost[k] > cfg.train.budget_flops:
            return tuple(loops), tuple(cumulative)
        total += cost[k]
        loops.append(k)
        cumulative.append(total)
        step += 1


# A config is planned several times (sweep, trainable, trainer), and a sampled-loop plan draws every step.
@functools.lru_cache(maxsize=64)
def plan(cfg: RunConfig) -> RunPlan:
    cfg = resolve(cfg)
    tokens = cfg.train.batch_size * cfg.data.seq_len
    sampler = loop_sampling.parse(cfg.train.loop_sampling)
    if sampler.kind == "fixed":
        loops, cumulative = (), ()
        per_step = flops.train_flops_per_step(cfg.model, cfg.data.seq_len, cfg.train.batch_size,
                                              backprop_loops=cfg.train.loop_backprop)
        steps = flops.steps_for_budget(cfg.train.budget_flops, per_step)
    else:
        loops, cumulative = _sampled_steps(cfg, sampler)
        steps = len(loops)
        per_step = round(cumulative[-1] / steps) if steps else \
            flops.train_flops_per_step(cfg.model, cfg.data.seq_len, cfg.train.batch_size)
    if steps < 1:
        raise ConfigError(f"train.budget_flops: {cfg.train.budget_flops:.3g} FLOPs buys no step: one step of this "
                          f"model costs {per_step:.3g} FLOPs; raise the budget or shrink the model/batch")
    if loops:  # the first step at which each fraction of the FLOPs is spent
        evals = {int(np.searchsorted(cumulative, f * cumulative[-1])) + 1 for f in cfg.eval.fractions}
    else:
        evals = {max(1, round(f * steps)) for f in cfg.eval.fractions}
    evals = sorted(evals | {steps})
    every = cfg.train.checkpoint_every
    ckpts = sorted(set(range(every, steps + 1, every)) | {steps}) if every else evals
    return RunPlan(cfg, flops.num_params(cfg.model), round(per_step / tokens), tokens, per_step, steps,
                   tuple(evals), tuple(ckpts), loops, cumulative)
