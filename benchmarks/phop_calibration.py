"""Calibrate the positive control: held-out accuracy on p-hop induction (tasks.phop) at one FLOPs budget, for a
shallow model, a looped one and deep plain ones, so that the sweep sizes in sweeps/positive_control.yaml rest
on measured numbers. Runs the trainer directly (no Ray, no MLflow), several runs at a time on one device.

    python benchmarks/phop_calibration.py --out phop_calibration.json     # what ran on one H200 (defaults)
    python benchmarks/phop_calibration.py --hops 4 8 --length 48 --budget 2e15 --d-model 256   # the first try

Each row: hops, variant (layers / loop), params, FLOPs spent, steps, wall seconds, val/accuracy and
val/answer_loss at every evaluation. Measured: benchmarks/results/phop_calibration_h200*.json, summarised
in the docstring of loopmdm_core.tasks.phop. The defaults took 102 s on one H200 (8 runs at a time).
"""

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, n_layers, loop_start, loop_end, n_loops, loop_sampling): a 2-layer block, looped 3 times, against its
# same-size (2 layers) and depth-matched (6 layers) plain models, and a plain 4-layer model in between
VARIANTS = [("plain2", 2, 0, 2, 1, "fixed"), ("loop[0,2)x3", 2, 0, 2, 3, "fixed"), ("plain4", 4, 0, 4, 1, "fixed"),
            ("plain6", 6, 0, 6, 1, "fixed")]


def config(hops: int, length: int, variant, budget: float, d_model: int, lr: float, seed: int,
           batch_size: int = 256) -> dict:
    name, layers, start, end, loops, sampling = variant
    task, seq_len = f"phop:{hops}:{length}:4", length + 4  # the letters, '=', the answer, EOS, one spare
    return {"model": {"n_layers": layers, "d_model": d_model, "n_heads": max(1, d_model // 64), "loop_start": start,
                      "loop_end": end, "n_loops": loops},
            "data": {"corpus": "none", "task": task, "task_problems": 200000,
                     "bpe_vocab_size": 257, "seq_len": seq_len},
            "train": {"budget_flops": budget, "batch_size": batch_size, "lr": lr, "seed": seed, "log_every": 200,
                      "loop_sampling": sampling},
            "eval": {"fractions": [0.125, 0.25, 0.5, 0.75, 1.0], "task_problems": 512, "n_batches": 4,
                     "batch_size": 64, "n_t": 8}}


def run_one(job: dict) -> dict:
    import torch

    from loopmdm_core import load_run_config, metrics, train
    torch.set_num_threads(job["threads"])  # runs share the host: no oversubscribed thread pools
    cfg = load_run_config(job["config"])
    evals = []

    def sink(step, values):
        if metrics.VAL_ACCURACY in values:
            evals.append({"step": step, "flops": values[metrics.FLOPS], "accuracy": values[metrics.VAL_ACCURACY],
                          "answer_loss": values.get(metrics.VAL_ANSWER_LOSS)})
    start = time.perf_counter()
    result = train(cfg, sink)
    return {**{k: v for k, v in job.items() if k != "config"}, "params": result.params, "flops": result.flops,
            "steps": result.steps, "wall_seconds": time.perf_counter() - start,
            "train_seconds": result.train_seconds, "evals": evals, "final_accuracy": evals[-1]["accuracy"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--length", type=int, default=16, help="letters per string")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--budget", type=float, default=1e14)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=[v[0] for v in VARIANTS])
    parser.add_argument("--parallel", type=int, default=8, help="runs at a time (they share the device)")
    parser.add_argument("--out", default="phop_calibration.json")
    args = parser.parse_args(argv)
    import os
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    jobs = [{"hops": h, "variant": v[0], "threads": threads, "config": config(h, args.length, v, args.budget, args.d_model, args.lr,
                                                           args.seed, args.batch_size)}
            for h in args.hops for v in VARIANTS if v[0] in args.variants]
    # prepare each corpus once, here, before the runs race to build the same cache
    from loopmdm_core import load_run_config
    from loopmdm_core.data import load_token_data
    for h in args.hops:
        load_token_data(load_run_config(jobs[[j["hops"] for j in jobs].index(h)]["config"]).data)
    start = time.perf_counter()
    rows = []
    with mp.get_context("spawn").Pool(args.parallel) as pool:
        for row in pool.imap_unordered(run_one, jobs):
            rows.append(row)
            print(f"hops {row['hops']} {row['variant']:>12}: accuracy {row['final_accuracy']:.3f} "
                  f"({row['steps']} steps, {row['flops']:.3g} FLOPs, {row['wall_seconds']:.0f} s)", flush=True)
    wall = time.perf_counter() - start
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    Path(args.out).write_text(json.dumps({"device": device, "parallel": args.parallel, "wall_seconds": wall,
                                          "args": vars(args), "rows": rows}, indent=2))
    print(f"{len(rows)} runs in {wall:.0f} s on {device}; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
