"""The trainer: a LoopMDM trained on exactly the steps its FLOPs budget buys.

train(run, sink, checkpoint_dir) knows nothing of Ray or MLflow: it reports `sink(step, metrics)` with
the names of metrics.py and writes atomic checkpoints into a folder it resumes from. Everything random
is a function of (seed, step) (batches, mask ratios, masks), so a run resumed from a checkpoint ends with the
same weights and metrics as one never stopped. Under distributed.launch the same code trains data-parallel:
every rank draws the whole batch and its masks and keeps its share of the rows, so n ranks compute the
gradient one process would; FLOPs and tokens are counted for the whole batch, over all ranks.
"""

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint, diffusion, distributed, failpoints, metrics
from .attention import resolve_backend
from .config import RunConfig, flatten, load_run_config
from .device import autocast_for, mfu, peak_flops, pick_device
from .errors import CheckpointError, ConfigError, LoopMDMError
from .lr_schedule import lr_at
from .model import LoopMDM
from .plan import RunPlan, plan

log = logging.getLogger(__name__)

Sink = Callable[[int, dict], None]


class TrainingDiverged(LoopMDMError):
    """The loss became NaN or infinite."""


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
RESUMABLE_CHANGES = {"train.device", "train.compile", "train.cuda_graphs", "train.checkpoint_loops",
                     "train.log_every", "train.checkpoint_every", "train.peak_flops", "data.cache_dir"}


def check_same_run(resume: checkpoint.Checkpoint, cfg: RunConfig):
    """Refuse to resume from a checkpoint another config wrote: it would silently mix two runs."""
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
        self.graphs = cfg.train.cuda_graphs
        if cfg.train.compile:
            for layer in model.layers:  # per block: the loop reuses one compiled graph whatever n_loops is
                layer.compile(mode="reduce-overhead" if self.graphs else None)
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
        if self.graphs:  # a new step: the graphs' outputs of the last one are free to be overwritten
            torch.compiler.cudagraph_mark_step_begin()
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


def train(run: RunPlan | RunConfig | dict, sink: Sink | None = None,
          checkpoint_dir: str | Path | None = None) -> TrainResult:
    """Train one run. Resumes from the newest intact checkpoint in `checkpoint_dir` if there is one.

    `run` is a RunPlan (plan.plan: validated and planned already, as a sweep's worker has it), or a RunConfig or
    the plain dict of one, validated and planned here.

    `sink(step, metrics)` receives metric dicts, at a checkpoint step before its checkpoint is written (a sink
    that buffers should persist there: a resume starts after that step). After a resume, steps past the
    checkpoint that were reported before the interruption are reported again (with the same values), so a sink
    that persists should skip steps it already holds.
    """
    began = time.perf_counter()
    if not isinstance(run, RunPlan):
        cfg = load_run_config(run) if isinstance(run, dict) else run
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
    if cfg.train.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"train.cuda_graphs: needs a CUDA device, and this run trains on {device.type}; set it "
                          f"to false here")
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
    backend = resolve_backend(cfg.model.attention, device)
    model = LoopMDM(cfg.model, backend, cfg.train.checkpoint_loops).to(device)
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
        if train_step.graphs:  # not a training step's: the graphs may reuse the last step's memory
            torch.compiler.cudagraph_mark_step_begin()
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
            utilisation = mfu(window_flops, elapsed, peak, world)
            if utilisation is not None and utilisation <= 1:
                values[metrics.MFU] = utilisation
            elif utilisation is not None and not mfu_warned:  # a peak below what the run achieves is not a peak
                log.warning("not logging perf/mfu: %.2f > 1 against a peak of %.3g FLOP/s; set train.peak_flops "
                            "to this device's real peak", utilisation, peak)
                mfu_warned = True
            values[metrics.TRAIN_SECONDS] = train_seconds
            if done == run.steps:  # train_seconds is cumulative over resumed sessions, as the FLOPs are
                whole_run = mfu(run.flops_after(done), train_seconds, peak, world)
                if whole_run is not None and whole_run <= 1:
                    values[metrics.MFU_RUN] = whole_run
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
