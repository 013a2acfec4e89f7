"""Tokens/s of the trainer's training step (model, ELBO loss, AdamW) on random tokens: no corpus, no datasets.

python benchmarks/step_throughput.py [--layers 12 --width 768 --heads 12 --seq 1024 --batch 32 --vocab 50304]
       [--loops 2,6,1] [--compile] [--steps 20] [--warmup 5]
Prints tokens/s, ms/step, model TFLOP/s (flops.py) and MFU against the card's datasheet bf16 peak and a matmul
ceiling measured in the same run. Runs on CUDA (bf16 autocast) or the CPU (fp32).
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from loopmdm_core import diffusion, flops  # noqa: E402
from loopmdm_core.config import RunConfig  # noqa: E402
from loopmdm_core.model import LoopMDM, ModelConfig  # noqa: E402
from loopmdm_core.train import autocast_for, build_optimizer, measured_peak, step_generator  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--loops", help="loop_start,loop_end,n_loops (default: plain, all layers once)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    start, end, n = (int(x) for x in args.loops.split(",")) if args.loops else (0, args.layers, 1)
    cfg = ModelConfig(n_layers=args.layers, d_model=args.width, n_heads=args.heads, loop_start=start, loop_end=end,
                      n_loops=n, vocab_size=args.vocab)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = LoopMDM(cfg).to(device)
    if args.compile:
        for layer in model.layers:
            layer.compile()
    opt = build_optimizer(model, RunConfig(), device)
    autocast = autocast_for(device, "auto")
    x = torch.randint(0, args.vocab - 1, (args.batch, args.seq), device=device)

    def step(i):
        with autocast() if autocast else contextlib.nullcontext():
            loss = diffusion.elbo_loss(model, x, args.vocab - 1, step_generator(0, i))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    tokens = args.batch * args.seq
    per_step = flops.train_flops_per_step(cfg, args.seq, args.batch)
    ceiling = measured_peak(device)
    datasheet = flops.known_peak(torch.cuda.get_device_name()) if device.type == "cuda" else None
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "config": cfg.__dict__, "seq": args.seq, "batch": args.batch, "compile": args.compile,
              "tokens_per_s": tokens / dt, "ms_per_step": dt * 1e3, "model_tflops": per_step / dt / 1e12,
              "mfu_vs_measured_matmul": per_step / dt / ceiling, "measured_matmul_tflops": ceiling / 1e12,
              "mfu_vs_datasheet": per_step / dt / datasheet if datasheet else None,
              "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
