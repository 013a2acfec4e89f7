"""The trainer: a LoopMDM trained on exactly the steps its FLOPs budget buys.

train(run_config, sink, checkpoint_dir) knows nothing of Ray or MLflow: it reports `sink(step, metrics)` with
the names of metrics.py and writes atomic checkpoints into a folder it resumes from. Everything random
is a function of (seed, step) (batches, mask ratios, masks), so a run resumed from a checkpoint ends with the
same weights and metrics as one never stopped. Under distributed.launch the same code trains data-parallel:
every rank draws the whole batch and its masks and keeps its share of the rows, so n ranks compute the
gradient one process would; FLOPs and tokens are counted for the whole batch, over all ranks.
"""

import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import checkpoint, diffusion, distributed, failpoints, flops, loop_sampling, metrics
from .attention import resolve_backend
from .config import RunConfig, load_run_config
from .errors import CheckpointError, ConfigError, LoopMDMError
from .model import LoopMDM
from .lr_schedule import lr_at
from .tokenizer import mask_id, model_vocab_size

log = logging.getLogger(__name__)

Sink = Callable[[int, dict], None]


class TrainingDiverged(LoopMDMError):
    """The loss became NaN or infinite."""


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
    """What a run will do, known before any data is read: the sweep's dry-run and the CLI print it.
    With a sampled loop count (train.loop_sampling) every step's draw is known in advance (loop_sampling.py),
    so the steps, their cumulative FLOPs and the evaluation points are exact here too."""
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


@dataclass
class TrainResult:
    steps: int
    flops: int
    tokens: int
    val_loss: float
    val_ppl: float
    unigram_ppl: float  # the corpus's no-context reference perplexity (data.py)
    params: int
    attention_backend: str
    resumed_from: int  # step of the checkpoint the run started from (0: fresh)
    train_seconds: float  # wall time of this call's training steps (not evaluation or set-up)


# Settings that change how a run is executed or reported, not what it computes: a resume may change them.
RESUMABLE_CHANGES = {"train.device", "train.compile", "train.checkpoint_loops", "train.log_every",
                     "train.checkpoint_every", "train.peak_flops", "data.cache_dir"}


def check_same_run(resume: checkpoint.Checkpoint, cfg: RunConfig):
    """Refuse to resume from a checkpoint another config wrote: it would silently mix two runs."""
    from .config import flatten
    saved, current = flatten(resume.state.get("config", {})), flatten(cfg)
    changed = sorted(k for k in saved.keys() | current.keys()
                     if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5])
        raise CheckpointError(f"{resume.path} was written by another config ({detail}); use another checkpoint "
                              f"folder (--out) for this config")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The RNG of one optimizer step (mask ratios and masks), independent of how the run got there."""
    digest = hashlib.sha256(f"loopmdm:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked, but torch sees no CUDA device; use auto or cpu")
    return device


def autocast_for(device: torch.device, dtype: str):
    """A factory of autocast contexts: bf16 on CUDA by default, plain fp32 on CPU."""
    use_bf16 = dtype == "bf16" or (dtype == "auto" and device.type == "cuda")
    if not use_bf16:
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def measured_peak(device: torch.device, trials: int = 1, reps: int = 4) -> float:
    """A matmul ceiling measured on the spot (FLOP/s) in the training dtype, best of `trials` timings of `reps`
    products: for MFU on CUDA cards with no datasheet peak, and for benchmarks/throughput.py."""
    n = 1024 if device.type == "cpu" else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def peak_flops(cfg_peak: float, device: torch.device) -> float | None:
    """The FLOP/s that MFU divides by: train.peak_flops, else the card's datasheet bf16 peak, else one measured
    on an unknown CUDA card. None on a CPU: a matmul timed there undercounts what the training step's kernels
    reach (a run's metrics read MFU 1.59 against one), so no honest peak is known and MFU is not logged."""
    if cfg_peak:
        return cfg_peak
    if device.type != "cuda":
        return None
    return flops.known_peak(torch.cuda.get_device_name(device)) or measured_peak(device)


def build_optimizer(model: LoopMDM, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
    # Weight decay on matrices (incl. embeddings), none on norm gains (nanoGPT's grouping).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.train.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2),
                             fused=device.type == "cuda")


class TrainStep:
    """One optimizer step exactly as train() runs it; benchmarks/throughput.py times this same object.

    The step never waits for the device: masks are drawn on the host and copied from pinned memory
    (diffusion.NoisedBatch), the head and cross-entropy run on the masked positions only in chunks, AdamW is
    fused, and the loss comes back as a device tensor that the caller reads only when it logs.
    """

    def __init__(self, model: LoopMDM, cfg: RunConfig, device: torch.device, mask_token: int):
        self.cfg, self.mask_token = cfg, mask_token
        self.optimizer = build_optimizer(model, cfg, device)
        self.autocast = autocast_for(device, cfg.train.dtype)
        self.pad_to = 256 if device.type == "cuda" else 1  # few distinct shapes for the allocator to reuse
        model.checkpoint_loops = cfg.train.checkpoint_loops
        if cfg.train.compile:
            for layer in model.layers:
                layer.compile()  # per block: the loop reuses one compiled graph whatever n_loops is
        rank, world = distributed.rank_and_world()
        self.rows = distributed.rank_rows(rank, world)  # train() checked that world divides the batch
        self.model = model
        if world > 1:  # gradients averaged over ranks = the gradient of the whole batch's mean loss
            from torch.nn.parallel import DistributedDataParallel
            self.model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                 gradient_as_bucket_view=True, bucket_cap_mb=100)

    def __call__(self, step: int, x: torch.Tensor, lr: float, fixed: torch.Tensor | None = None,
                 n_loops: int | None = None) -> torch.Tensor:
        """Train on the host batch `x` (its masks from the step's own RNG, never on `fixed` tokens) at `lr`,
        running `n_loops` (None: the model's count) and backpropagating through train.loop_backprop of them."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast() if self.autocast else contextlib.nullcontext():
            loss = diffusion.elbo_loss(self.model, x, self.mask_token, step_generator(self.cfg.train.seed, step),
                                       n_loops=n_loops, pad_to=self.pad_to, rows=self.rows, fixed=fixed,
                                       backprop_loops=self.cfg.train.loop_backprop)
        loss.backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def _heldout_problems(cfg: RunConfig) -> list:
    """The task's held-out (test split) problems val/accuracy is scored on; none without a task."""
    if not cfg.data.task or not cfg.eval.task_problems:
        return []
    from .tasks import problems
    return problems(cfg.data.task, "test", cfg.eval.task_problems)


def train(run_config: RunConfig | dict, sink: Sink | None = None,
          checkpoint_dir: str | Path | None = None) -> TrainResult:
    """Train one run. Resumes from the newest intact checkpoint in `checkpoint_dir` if there is one.

    `sink(step, metrics)` receives metric dicts, at a checkpoint step before its checkpoint is written (a sink
    that buffers should persist there: a resume starts after that step). After a resume, steps past the
    checkpoint that were reported before the interruption are reported again (with the same values), so a sink
    that persists should skip steps it already holds.
    """
    began = time.perf_counter()
    cfg = load_run_config(run_config) if isinstance(run_config, dict) else run_config
    if cfg.problems():
        raise ConfigError(cfg.problems())
    run = plan(cfg)
    cfg = run.config
    sink = sink or (lambda step, values: None)
    resume = checkpoint.latest(checkpoint_dir)  # before any compute: a corrupt folder fails fast
    if resume:
        check_same_run(resume, cfg)

    rank, world = distributed.rank_and_world()
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} does not split over {world} data-parallel "
                          f"workers; use a multiple of {world}")
    device = pick_device(cfg.train.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (distributed.launch)
    if rank:  # ranks past 0 train in lockstep and report nothing; rank 0 alone logs and writes checkpoints
        sink, writes = (lambda step, values: None), False
    else:
        writes = checkpoint_dir is not None
    from .data import load_token_data  # imports `datasets`; kept off the package import path
    phases = dict.fromkeys(metrics.PHASE_SECONDS, 0.0)  # this session's; the checkpoint carries the earlier ones
    data_began = time.perf_counter()
    data = load_token_data(cfg.data)
    data.require_batch(cfg.train.batch_size)
    val_batches, val_fixed = data.val_batches(cfg.eval.n_batches, cfg.eval.batch_size)  # host: masks drawn there
    val_answers = data.answer_positions(val_batches, val_fixed)  # prompted tasks: the tokens val/answer_loss scores
    task_problems = _heldout_problems(cfg)
    data_seconds = time.perf_counter() - data_began
    phases["data"] = data_seconds

    torch.manual_seed(cfg.train.seed)
    model = LoopMDM(cfg.model).to(device)
    backend = resolve_backend(cfg.model.attention, device)
    model.set_attention_backend(backend)
    train_step = TrainStep(model, cfg, device, data.mask_id)
    optimizer = train_step.optimizer
    start, loss_sum, loss_count, train_seconds = 0, 0.0, 0, 0.0
    if resume:
        checkpoint.restore(resume, model, optimizer)
        start, loss_sum, loss_count = resume.step, resume.state["loss_sum"], resume.state["loss_count"]
        train_seconds = resume.state["train_seconds"]
        for phase, seconds in resume.state.get("phase_seconds", {}).items():
            phases[phase] += seconds
        log.info("resumed from %s (step %d of %d)", resume.path, start, run.steps)
    autocast = train_step.autocast
    peak = peak_flops(cfg.train.peak_flops, device)
    log.info("run: %d params, %d steps x %.3g FLOPs, attention %s, device %s",
             run.params, run.steps, run.flops_per_step, backend, device)

    def evaluate() -> dict:
        """The validation metrics: loss, and for tasks the answer-only loss and held-out accuracy."""
        model.eval()
        loss, answer_loss = diffusion.validation_losses(model, val_batches, data.mask_id, cfg.eval.n_t,
                                                        cfg.eval.seed, autocast=autocast, fixed=val_fixed,
                                                        scored=val_answers)
        out = {metrics.VAL_LOSS: loss, metrics.VAL_PPL: diffusion.perplexity(loss)}
        if answer_loss is not None:
            out[metrics.VAL_ANSWER_LOSS] = answer_loss
        if task_problems:
            from .evaluate import task_accuracy
            out[metrics.VAL_ACCURACY] = task_accuracy(
                model, data.tokenizer, task_problems, data.mask_id, answer_tokens=4, n_steps=cfg.eval.task_steps,
                fill_to=cfg.data.seq_len if cfg.data.task_format == "prompted" else 0, batch_size=256,
                autocast=autocast)["accuracy"]
        model.train()
        return out

    evals, ckpts = set(run.eval_steps), set(run.checkpoint_steps)
    loss_acc = torch.zeros((), device=device)  # summed on the device: no host sync per step
    window_start, window_steps, session_seconds = time.perf_counter(), 0, 0.0
    mfu_warned = False
    phases["startup"] += time.perf_counter() - began - data_seconds
    val_loss = math.nan
    model.train()
    for step in range(start, run.steps):
        lr = lr_at(run.lr_position(step), run.steps, cfg.train)
        x, fixed = data.train_batch(step, cfg.train.batch_size, cfg.train.seed)
        loss_acc += train_step(step, x, lr, fixed, run.loops_at(step))
        if step == start and cfg.train.compile:  # the first step compiles: its time is compile time, not training
            loss_acc.item()
            phases["compile"] += time.perf_counter() - window_start
            window_start = time.perf_counter()
        failpoints.reached("step")
        window_steps += 1
        done = step + 1

        if done % cfg.train.log_every and done not in evals and done not in ckpts:
            continue
        if world > 1:
            torch.distributed.all_reduce(loss_acc)
            loss_acc /= world
        loss_sum, loss_count = loss_sum + loss_acc.item(), loss_count + window_steps  # .item() syncs the device
        elapsed = time.perf_counter() - window_start
        train_seconds += elapsed
        session_seconds += elapsed
        loss_acc.zero_()
        values = {metrics.FLOPS: run.flops_after(done), metrics.TOKENS: done * run.tokens_per_step, metrics.LR: lr}
        if done % cfg.train.log_every == 0 or done == run.steps:
            train_loss = loss_sum / loss_count
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss is {train_loss} at step {done}; lower train.lr or check data")
            values[metrics.TRAIN_LOSS] = train_loss
            values[metrics.TOKENS_PER_S] = window_steps * run.tokens_per_step / elapsed
            window_flops = run.flops_after(done) - run.flops_after(done - window_steps)
            mfu = window_flops / elapsed / (peak * world) if peak else None
            if mfu is not None and mfu <= 1:
                values[metrics.MFU] = mfu
            elif mfu is not None and not mfu_warned:  # a peak below what the run achieves is not a peak
                log.warning("not logging perf/mfu: %.2f > 1 against a peak of %.3g FLOP/s; set train.peak_flops "
                            "to this device's real peak", mfu, peak)
                mfu_warned = True
            values[metrics.TRAIN_SECONDS] = train_seconds
            values.update({metrics.PHASE_SECONDS[k]: v for k, v in phases.items()})
            if run.loops:  # the mean loop count drawn since the last log
                values[metrics.TRAIN_LOOPS] = sum(run.loops[done - window_steps:done]) / window_steps
            loss_sum, loss_count = 0.0, 0
        if done in evals:
            eval_began = time.perf_counter()
            scores = evaluate()
            phases["eval"] += time.perf_counter() - eval_began
            val_loss = scores[metrics.VAL_LOSS]
            values.update(scores)
        sink(done, values)  # before the checkpoint: a crash in between re-reports this step, never loses it
        if done in ckpts and writes:
            saving = time.perf_counter()
            checkpoint.save(checkpoint_dir, done, model, optimizer,
                            {"loss_sum": loss_sum, "loss_count": loss_count, "train_seconds": train_seconds,
                             "phase_seconds": phases, "config": cfg.to_dict()})
            phases["checkpoint"] += time.perf_counter() - saving
        window_start, window_steps = time.perf_counter(), 0

    if math.isnan(val_loss):  # resumed from the final checkpoint: nothing trained, score the weights
        val_loss = evaluate()[metrics.VAL_LOSS]
    return TrainResult(run.steps, run.total_flops, run.steps * run.tokens_per_step, val_loss,
                       diffusion.perplexity(val_loss), data.meta["unigram_ppl"], run.params, backend,
                       start, session_seconds)
