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
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint, diffusion, distributed, failpoints, flops, metrics
from .attention import resolve_backend
from .config import RunConfig, load_run_config
from .errors import CheckpointError, ConfigError, LoopMDMError
from .model import LoopMDM
from .schedule import lr_at
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
    """What a run will do, known before any data is read: the sweep's dry-run and the CLI print it."""
    config: RunConfig  # resolved
    params: int
    flops_per_token: int  # training FLOPs per token (3 x forward)
    tokens_per_step: int
    flops_per_step: int
    steps: int
    eval_steps: tuple[int, ...]
    checkpoint_steps: tuple[int, ...]

    @property
    def total_flops(self) -> int:
        return self.steps * self.flops_per_step


def plan(cfg: RunConfig) -> RunPlan:
    cfg = resolve(cfg)
    tokens = cfg.train.batch_size * cfg.data.seq_len
    per_step = flops.train_flops_per_step(cfg.model, cfg.data.seq_len, cfg.train.batch_size)
    steps = flops.steps_for_budget(cfg.train.budget_flops, per_step)
    if steps < 1:
        raise ConfigError(f"train.budget_flops: {cfg.train.budget_flops:.3g} FLOPs buys no step: one step of this "
                          f"model costs {per_step:.3g} FLOPs; raise the budget or shrink the model/batch")
    evals = sorted({max(1, round(f * steps)) for f in cfg.eval.fractions} | {steps})
    every = cfg.train.checkpoint_every
    ckpts = sorted(set(range(every, steps + 1, every)) | {steps}) if every else evals
    return RunPlan(cfg, flops.num_params(cfg.model), flops.train_flops_per_token(cfg.model, cfg.data.seq_len),
                   tokens, per_step, steps, tuple(evals), tuple(ckpts))


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
    products: for MFU where no datasheet peak is known (CPUs; cheap by default, it runs at every run's start)."""
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


def peak_flops(cfg_peak: float, device: torch.device) -> float:
    if cfg_peak:
        return cfg_peak
    if device.type == "cuda":
        known = flops.known_peak(torch.cuda.get_device_name(device))
        if known:
            return known
    return measured_peak(device)


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

    def __call__(self, step: int, x: torch.Tensor, lr: float, fixed: torch.Tensor | None = None) -> torch.Tensor:
        """Train on the host batch `x` (its masks from the step's own RNG, never on `fixed` tokens) at `lr`."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast() if self.autocast else contextlib.nullcontext():
            loss = diffusion.elbo_loss(self.model, x, self.mask_token, step_generator(self.cfg.train.seed, step),
                                       pad_to=self.pad_to, rows=self.rows, fixed=fixed)
        loss.backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def train(run_config: RunConfig | dict, sink: Sink | None = None,
          checkpoint_dir: str | Path | None = None) -> TrainResult:
    """Train one run. Resumes from the newest intact checkpoint in `checkpoint_dir` if there is one.

    `sink(step, metrics)` receives metric dicts, at a checkpoint step before its checkpoint is written (a sink
    that buffers should persist there: a resume starts after that step). After a resume, steps past the
    checkpoint that were reported before the interruption are reported again (with the same values), so a sink
    that persists should skip steps it already holds.
    """
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
    data = load_token_data(cfg.data)
    data.require_batch(cfg.train.batch_size)
    val_batches, val_fixed = data.val_batches(cfg.eval.n_batches, cfg.eval.batch_size)  # host: masks drawn there

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
        log.info("resumed from %s (step %d of %d)", resume.path, start, run.steps)
    autocast = train_step.autocast
    peak = peak_flops(cfg.train.peak_flops, device)
    log.info("run: %d params, %d steps x %.3g FLOPs, attention %s, device %s",
             run.params, run.steps, run.flops_per_step, backend, device)

    def evaluate() -> float:
        model.eval()
        loss = diffusion.validation_elbo(model, val_batches, data.mask_id, cfg.eval.n_t, cfg.eval.seed,
                                         autocast=autocast, fixed=val_fixed)
        model.train()
        return loss

    evals, ckpts = set(run.eval_steps), set(run.checkpoint_steps)
    loss_acc = torch.zeros((), device=device)  # summed on the device: no host sync per step
    window_start, window_steps, session_seconds = time.perf_counter(), 0, 0.0
    val_loss = math.nan
    model.train()
    for step in range(start, run.steps):
        lr = lr_at(step, run.steps, cfg.train)
        x, fixed = data.train_batch(step, cfg.train.batch_size, cfg.train.seed)
        loss_acc += train_step(step, x, lr, fixed)
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
        values = {metrics.FLOPS: done * run.flops_per_step, metrics.TOKENS: done * run.tokens_per_step,
                  metrics.LR: lr}
        if done % cfg.train.log_every == 0 or done == run.steps:
            train_loss = loss_sum / loss_count
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss is {train_loss} at step {done}; lower train.lr or check data")
            values[metrics.TRAIN_LOSS] = train_loss
            values[metrics.TOKENS_PER_S] = window_steps * run.tokens_per_step / elapsed
            values[metrics.MFU] = window_steps * run.flops_per_step / elapsed / (peak * world)
            values[metrics.TRAIN_SECONDS] = train_seconds
            loss_sum, loss_count = 0.0, 0
        if done in evals:
            val_loss = evaluate()
            values[metrics.VAL_LOSS], values[metrics.VAL_PPL] = val_loss, diffusion.perplexity(val_loss)
        sink(done, values)  # before the checkpoint: a crash in between re-reports this step, never loses it
        if done in ckpts and writes:
            checkpoint.save(checkpoint_dir, done, model, optimizer,
                            {"loss_sum": loss_sum, "loss_count": loss_count, "train_seconds": train_seconds,
                             "config": cfg.to_dict()})
        window_start, window_steps = time.perf_counter(), 0

    if math.isnan(val_loss):  # resumed from the final checkpoint: nothing trained, score the weights
        val_loss = evaluate()
    return TrainResult(run.steps, run.total_flops, run.steps * run.tokens_per_step, val_loss,
                       diffusion.perplexity(val_loss), data.meta["unigram_ppl"], run.params, backend,
                       start, session_seconds)
