"""Training throughput: our trainer's step against a plain PyTorch reference of the same model, in one run.

python benchmarks/throughput.py [--out throughput.json] [--steps 20] [--warmup 12] [--variants ...] [--profile NAME]
python benchmarks/throughput.py --tiny     # the CPU default config (4 x 128, seq 64, batch 16)
python benchmarks/throughput.py --layers 8 --width 256 --heads 4 --ff 0 --vocab 4096 --seq 256 --batch 64 \
    --variants ref_compiled,ours,ours_graphs,ours_batch4x --concurrent 2,4,8   # a small model: which levers pay

Default shape (the one docs/performance.md#training-step-throughput reports): 12 layers x 768 x 12 heads, SwiGLU
2048, vocab 50304, seq 1024, batch 32, bf16 autocast, AdamW, the MDM loss. Variants:
  ref_eager / ref_compiled  a minimal Llama-style bidirectional transformer written here (SDPA, full-vocab fp32
                            logits, masks drawn on the device), eager and under torch.compile: the baseline
  ours                      loopmdm_core.train.TrainStep as train() and the sweeps run it (compiled blocks)
  loop2 / loop4             ours with layers [2, 6) (--loop) looped 2 / 4 times; *_ckpt: train.checkpoint_loops
  depth2 / depth4           the depth-matched baselines (16 and 24 layers)
  ours_graphs / loop2_graphs  the blocks compiled with mode="reduce-overhead" (CUDA graphs); ours_whole_graphs:
                            the whole model as one such graph; ours_batch4x: ours at 4x the batch
  ours_N_sharing            (--concurrent N) N processes training ours on one GPU at once; their MFUs summed
Each is timed with CUDA events over --steps steps after --warmup; model FLOPs are flops.py's (loops unrolled,
the head over every position), MFU is against a bf16 matmul ceiling measured in the same run. Prints a table
and writes JSON. --profile NAME prints the top CUDA kernels of that variant's step and the Python functions
the host spends its time in.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from loopmdm_core import distributed, flops
from loopmdm_core.config import RunConfig, TrainConfig
from loopmdm_core.model import LoopMDM, ModelConfig, depth_matched
from loopmdm_core.device import measured_peak, mfu
from loopmdm_core.train import TrainStep

# ------------------------------------------------------------------------------------- the in-file reference

class RefBlock(nn.Module):
    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_up, self.down = nn.Linear(d, 2 * ff, bias=False), nn.Linear(ff, d, bias=False)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, s, 3, self.heads, d // self.heads).transpose(1, 3).unbind(2)

        def rope(t):
            t1, t2 = t.chunk(2, dim=-1)
            return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1).to(v.dtype)
        a = F.scaled_dot_product_attention(rope(q), rope(k), v).transpose(1, 2).reshape(b, s, d)
        x = x + self.o(a)
        g, u = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class Reference(nn.Module):
    """The plain model: no loops, head on every position, fp32 logits, CE over all positions x masked / t."""

    def __init__(self, cfg: ModelConfig, seq: int):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(RefBlock(cfg.d_model, cfg.n_heads, cfg.ff_dim) for _ in range(cfg.n_layers))
        self.norm, self.head = nn.RMSNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        hd = cfg.d_model // cfg.n_heads
        angles = torch.outer(torch.arange(seq).float(), 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd))
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x, mask_id):
        t = torch.rand(x.shape[0], 1, device=x.device).clamp_min(1e-3)
        masked = torch.rand(x.shape, device=x.device) < t
        h = self.embed(torch.where(masked, mask_id, x))
        for block in self.blocks:
            h = block(h, self.cos, self.sin)
        logits = self.head(self.norm(h)).float()
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), x.view(-1), reduction="none").view(x.shape)
        return (ce * masked / t).sum() / x.numel()


def reference_step(cfg: ModelConfig, seq: int, batch: int, device, compiled: bool):
    model = Reference(cfg, seq).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    x = torch.randint(0, cfg.vocab_size - 1, (batch, seq), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(i):
        with autocast:
            loss = forward(x, cfg.vocab_size - 1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


# ------------------------------------------------------------------------------------------ our trainer's step

def our_step(cfg: ModelConfig, seq: int, batch: int, device, checkpoint_loops: bool = False, whole: bool = False,
             graphs: bool = False):
    """loopmdm_core's TrainStep, configured as a sweep trial on this device would be (compile on CUDA).
    Under distributed.launch `batch` is the global batch, split over the ranks as train() splits it.
    Experiments: `whole` compiles one graph for the whole forward (the loop unrolled at its fixed count);
    `graphs` compiles with mode="reduce-overhead" (CUDA graphs: a block's kernels replayed as one launch)."""
    run = RunConfig(model=cfg, train=TrainConfig(compile=device.type == "cuda", checkpoint_loops=checkpoint_loops,
                                                 batch_size=batch))
    torch.manual_seed(0)
    model = LoopMDM(cfg, "cudnn" if device.type == "cuda" else "sdpa", checkpoint_loops).to(device)
    mode = "reduce-overhead" if graphs else None
    if whole or graphs:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, compile=False))
        for module in [model] if whole else model.layers:
            module.compile(mode=mode)
    step_fn = TrainStep(model, run, device, cfg.vocab_size - 1)
    batches = [torch.randint(0, cfg.vocab_size - 1, (batch, seq)) for _ in range(4)]  # host, as the data loader gives
    if graphs:
        def step(i):
            torch.compiler.cudagraph_mark_step_begin()  # a new training step: the last one's graph outputs are free
            return step_fn(i, batches[i % len(batches)], 1e-4)
        return step
    return lambda i: step_fn(i, batches[i % len(batches)], 1e-4)


# ---------------------------------------------------------------------------------------------------- timing

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device, warmup: int, steps: int) -> float:
    """Seconds per step: CUDA events around `steps` steps after `warmup` (wall clock on the CPU)."""
    for i in range(warmup):
        step(i)
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(steps):
            step(warmup + i)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / steps
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    return (time.perf_counter() - t0) / steps


def data_parallel_seconds(cfg: ModelConfig, seq: int, batch: int, warmup: int, steps: int) -> float:
    """Seconds per step of our step on every rank of a distributed.launch (global batch `batch`)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return time_steps(our_step(cfg, seq, batch, device), device, warmup, steps)


def _concurrent_worker(cfg: ModelConfig, seq: int, batch: int, warmup: int, steps: int, threads: int, barrier,
                       results):
    """One of several processes sharing the GPU, as trials with a fractional `resources.gpu` do: warm up (compile),
    wait for the others, then time `steps` steps by the wall clock (CUDA events see only this process)."""
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_num_threads(threads)  # the host's cores shared out, as Ray shares them among trials
    step = our_step(cfg, seq, batch, device)
    for i in range(warmup):
        step(i)
    sync(device)
    barrier.wait()
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync(device)
    results.put(time.perf_counter() - start)


def concurrent_seconds(n: int, cfg: ModelConfig, seq: int, batch: int, warmup: int, steps: int) -> list[float]:
    """Seconds per step in each of `n` processes training `ours` on one GPU at the same time."""
    ctx = torch.multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = [ctx.Process(target=_concurrent_worker, args=(cfg, seq, batch, warmup, steps, threads, barrier, results))
             for _ in range(n)]
    for proc in procs:
        proc.start()
    seconds = [results.get(timeout=900) / steps for _ in procs]
    for proc in procs:
        proc.join()
    return seconds


def variants(cfg: ModelConfig, names: list[str], loop: tuple[int, int]):
    looped = {k: dataclasses.replace(cfg, loop_start=loop[0], loop_end=loop[1], n_loops=k) for k in (2, 4)}
    table = {"ref_eager": ("ref", cfg, False), "ref_compiled": ("ref", cfg, True), "ours": ("ours", cfg, False),
             "ours_graphs": ("graphs", cfg, False), "ours_whole_graphs": ("whole_graphs", cfg, False),
             "ours_batch4x": ("batch4x", cfg, False)}
    for k, c in looped.items():
        table[f"loop{k}"] = ("ours", c, False)
        table[f"loop{k}_ckpt"] = ("ours", c, True)
        table[f"depth{k}"] = ("ours", depth_matched(c), False)
        table[f"loop{k}_whole"] = ("whole", c, False)
        table[f"loop{k}_graphs"] = ("graphs", c, False)
    table["ours_whole"] = ("whole", cfg, False)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {', '.join(table)}")
    return [(n, *table[n]) for n in names]


def profile(step, device, steps: int = 3):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    for i in range(3):
        step(i)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for i in range(steps):
            step(100 + i)
        sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70))
    # Where the host's time goes (a small model's step waits for the host): Python functions by their own time.
    import cProfile
    import pstats
    host = cProfile.Profile()
    began = time.perf_counter()
    host.enable()
    for i in range(10):
        step(200 + i)
    sync(device)
    host.disable()
    print(f"host profile of 10 steps ({(time.perf_counter() - began) * 100:.1f} ms per step under cProfile):")
    pstats.Stats(host).sort_stats("tottime").print_stats(30)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ff", type=int, default=2048, help="SwiGLU hidden size; 0: the model's default")
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--loop", default="2,6", help="loop_start,loop_end of the looped variants")
    p.add_argument("--tiny", action="store_true",
                   help="the CPU default config: 4 x 128, seq 64, batch 16, vocab 576, loop 1,3")
    p.add_argument("--variants", default="ref_eager,ref_compiled,ours,loop2,loop4,depth2,depth4,loop2_ckpt,loop4_ckpt")
    p.add_argument("--steps", type=int, default=20)
    # Past DDP's runtime-stats log at its 10th iteration: with 8, the first data-parallel launch in a process
    # often stalled there once, for ~0.5 s (2 H200s, 4 of 7 launches), a fifth of a 20-step window.
    p.add_argument("--warmup", type=int, default=12)
    p.add_argument("--profile", help="print the kernel profile of this variant")
    p.add_argument("--workers", type=int, default=1,
                   help="also time `ours` data-parallel on this many GPUs (batch per GPU = --batch) and print the "
                        "scaling efficiency against one GPU")
    p.add_argument("--concurrent", default="",
                   help="comma-separated process counts, e.g. 2,4,8: also time `ours` in that many processes sharing "
                        "the GPU at once (trials with resources.gpu 1/N) and print their summed MFU")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.tiny:
        args.layers, args.width, args.heads, args.ff, args.vocab, args.seq, args.batch = 4, 128, 4, 0, 576, 64, 16
        args.loop = "1,3"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    cores = torch.get_num_threads()
    if args.workers > 1:  # one GPU timed with the threads each data-parallel rank gets: a like-for-like baseline
        torch.set_num_threads(distributed.threads_per_rank(args.workers, device.type == "cuda"))
    cfg = ModelConfig(n_layers=args.layers, d_model=args.width, n_heads=args.heads, d_ff=args.ff,
                      loop_start=0, loop_end=args.layers, n_loops=1, vocab_size=args.vocab)
    ceiling = measured_peak(device, trials=3, reps=10)  # the trainer's ceiling, measured more carefully
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(f"{name}, torch {torch.__version__}; matmul ceiling {ceiling / 1e12:.1f} TFLOP/s; shape {args.layers}L x "
          f"{args.width} x {args.heads}h, ff {cfg.ff_dim}, vocab {args.vocab}, seq {args.seq}, batch {args.batch}")
    rows = []
    loop = tuple(int(v) for v in args.loop.split(","))
    for label, kind, c, ckpt in variants(cfg, args.variants.split(","), loop):
        batch = 4 * args.batch if kind == "batch4x" else args.batch  # a larger micro-batch: the same FLOPs per token
        make = (lambda c=c, compiled=ckpt: reference_step(c, args.seq, batch, device, compiled)) if kind == "ref" \
            else (lambda c=c, ckpt=ckpt, kind=kind, batch=batch: our_step(
                c, args.seq, batch, device, ckpt, kind.startswith("whole"), kind.endswith("graphs")))
        # Each variant compiles as in a fresh process: a block compiled again at another shape (the 4x batch) would
        # otherwise come out with dynamic shapes, other kernels (benchmarks/cuda_graphs.py).
        torch.compiler.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            step = make()
            dt = time_steps(step, device, args.warmup, args.steps)
        except Exception as e:  # an experiment that does not run (out of memory, a compile mode that fails) is a row
            error = "out of memory" if isinstance(e, torch.OutOfMemoryError) else f"{type(e).__name__}: {e}"[:300]
            rows.append({"variant": label, "error": error})
            print(f"{label:<14} {error}")
            continue
        per_step = flops.train_flops_per_step(c, args.seq, batch)
        row = {"variant": label, "layers_applied": c.applied_layers(), "tokens_per_s": batch * args.seq / dt,
               "ms_per_step": dt * 1e3, "model_tflops": per_step / dt / 1e12, "mfu": mfu(per_step, dt, ceiling),
               "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
        rows.append(row)
        if args.profile == label:
            profile(step, device)
        del step
    if args.workers > 1:
        torch.set_num_threads(cores)  # launch() splits them over the ranks
        dt = distributed.launch(args.workers, data_parallel_seconds,
                                (cfg, args.seq, args.batch * args.workers, args.warmup, args.steps))
        per_step = flops.train_flops_per_step(cfg, args.seq, args.batch * args.workers)
        rows.append({"variant": f"ours_x{args.workers}", "layers_applied": cfg.applied_layers(),
                     "tokens_per_s": args.batch * args.workers * args.seq / dt, "ms_per_step": dt * 1e3,
                     "model_tflops": per_step / dt / 1e12, "mfu": mfu(per_step, dt, ceiling, args.workers),
                     "peak_mem_gib": None})
    for n in [int(v) for v in args.concurrent.split(",") if v]:
        seconds = concurrent_seconds(n, cfg, args.seq, args.batch, args.warmup, args.steps)
        per_step = flops.train_flops_per_step(cfg, args.seq, args.batch)
        rows.append({"variant": f"ours_{n}_sharing", "layers_applied": cfg.applied_layers(),
                     "tokens_per_s": sum(args.batch * args.seq / dt for dt in seconds),
                     "ms_per_step": 1e3 * sum(seconds) / n,  # each process's own, averaged
                     "model_tflops": sum(per_step / dt for dt in seconds) / 1e12,
                     "mfu": sum(mfu(per_step, dt, ceiling) for dt in seconds), "peak_mem_gib": None,
                     "mfu_per_process": [mfu(per_step, dt, ceiling) for dt in seconds]})
    base = {r["variant"]: r for r in rows if "error" not in r}
    print(f"{'variant':<14} {'layers':>6} {'tokens/s':>10} {'ms/step':>8} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8} "
          f"{'vs ref_compiled':>15}")
    for r in rows:
        if "error" in r:
            continue
        ratio = f"{r['tokens_per_s'] / base['ref_compiled']['tokens_per_s']:.2f}x" if "ref_compiled" in base else "-"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{r['variant']:<14} {r['layers_applied']:>6} {r['tokens_per_s']:>10,.0f} {r['ms_per_step']:>8.2f} "
              f"{r['model_tflops']:>8.1f} {100 * r['mfu']:>5.1f}% {mem:>8} {ratio:>15}")
    if args.workers > 1 and "ours" in base:
        efficiency = base[f"ours_x{args.workers}"]["tokens_per_s"] / (args.workers * base["ours"]["tokens_per_s"])
        print(f"data-parallel scaling efficiency on {args.workers} workers: {100 * efficiency:.1f}% of "
              f"{args.workers}x one")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                              "matmul_tflops": ceiling / 1e12, "shape": vars(args), "rows": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
