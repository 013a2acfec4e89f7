"""train.cuda_graphs: the trainer with each compiled block replayed as a CUDA graph, against the same runs with
the blocks compiled plainly, in one process (CUDA only).

python benchmarks/cuda_graphs.py [--budget 3e14] [--variants same_size,...] [--control] [--out cuda_graphs.json]

The shape is the language-modelling campaign's (sweeps/lm_iso_flops_gpu.yaml: 8 layers x 256, 4 heads, BPE
4,096 on the built-in corpus, seq 256, batch 64), trained by loopmdm_core.train.train exactly as a trial trains.
Each variant runs twice, `train.compile: true` with and without `train.cuda_graphs`, in alternating order; the
script prints the training seconds of both and their ratio, and the largest difference of any logged loss (each
run compiles afresh and the graphs replay the same kernels, so the losses agree exactly: 0.0 on one H200).
Variants cover every path a graph must survive: no loop, a loop, a sampled loop count, truncated backprop through
the loop. (With recomputed loops, train.checkpoint_loops, recording failed on torch 2.11, so the config refuses
the pair.)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from loopmdm_core import metrics  # noqa: E402
from loopmdm_core.config import load_run_config  # noqa: E402
from loopmdm_core.train import train  # noqa: E402

VARIANTS = {
    "same_size": {},  # 8 layers; the loops are of layers [2, 4): x2 (also sampled 1..3), x3 (last pass backpropagated)
    "loop x2": {"model": {"loop_start": 2, "loop_end": 4, "n_loops": 2}},
    "loop x2 sampled": {"model": {"loop_start": 2, "loop_end": 4, "n_loops": 2},
                                "train": {"loop_sampling": "uniform:1:3"}},
    "loop x3 bp1": {"model": {"loop_start": 2, "loop_end": 4, "n_loops": 3}, "train": {"loop_backprop": 1}},
}
LOSSES = (metrics.TRAIN_LOSS, metrics.VAL_LOSS)
TOLERANCE = 1e-2  # bf16 rounding of the same kernels in another order would stay far below; a bug would not


def config(budget: float, variant: dict, graphs: bool, log_every: int = 50):
    sections = {
        "model": {"n_layers": 8, "d_model": 256, "n_heads": 4, **variant.get("model", {})},
        "data": {"corpus": "builtin:shakespeare", "tokenizer": "bpe", "bpe_vocab_size": 4096, "seq_len": 256},
        "train": {"budget_flops": budget, "batch_size": 64, "warmup_frac": 0.05, "compile": True,
                  "cuda_graphs": graphs, "log_every": log_every, **variant.get("train", {})},
        "eval": {"fractions": [0.5, 1.0], "n_batches": 8, "batch_size": 32, "n_t": 8},
    }
    return load_run_config(sections)


def run(cfg) -> dict:
    # Each run compiles as a trial in a fresh process does. Without this, the second compilation in the process
    # (the other mode) is also the frame's second, which Dynamo compiles with dynamic shapes (it saw the evaluation
    # batch's too): other kernels, other rounding; what this script once reported as the graphs' numerics.
    torch.compiler.reset()
    losses = {}

    def sink(step, values):
        for key in LOSSES:
            if key in values:
                losses[f"{key}@{step}"] = values[key]
    began = time.perf_counter()
    result = train(cfg, sink=sink)
    return {"train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - began,
            "steps": result.steps, "val_loss": result.val_loss, "losses": losses}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=3e14)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--log-every", type=int, default=50, help="train.log_every: 1 compares every step's loss")
    p.add_argument("--control", action="store_true",
                   help="first train same_size without graphs twice: how far two identical runs' losses differ")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("CUDA graphs need a CUDA device")
    rows = []
    if args.control:
        a, b = (run(config(args.budget, VARIANTS["same_size"], False, args.log_every)) for _ in range(2))
        worst = max(abs(a["losses"][k] - b["losses"][k]) for k in a["losses"])
        rows.append({"variant": "control: same_size plain twice", "largest_loss_difference_plain_twice": worst})
        print(f"control: same_size without graphs, twice: largest loss difference {worst:.2e}", flush=True)
    for i, name in enumerate(args.variants.split(",")):
        order = (False, True) if i % 2 == 0 else (True, False)  # neither always runs on the warmer machine
        try:
            runs = {graphs: run(config(args.budget, VARIANTS[name], graphs, args.log_every)) for graphs in order}
        except Exception as e:  # a path the graphs do not survive is a finding, and the other variants still run
            rows.append({"variant": name, "error": f"{type(e).__name__}: {e}"[:500]})
            print(f"{name:<30} FAILED: {rows[-1]['error']}", flush=True)
            continue
        plain, graphs = runs[False], runs[True]
        assert plain["losses"].keys() == graphs["losses"].keys()
        worst = max(abs(plain["losses"][k] - graphs["losses"][k]) for k in plain["losses"])
        first = sorted(plain["losses"], key=lambda k: (k.split("@")[0], int(k.split("@")[1])))[:3]
        print(f"{name}: first losses plain / graphs: " +
              ", ".join(f"{k} {plain['losses'][k]:.6f} / {graphs['losses'][k]:.6f}" for k in first), flush=True)
        row = {"variant": name, "steps": plain["steps"], "plain": plain, "graphs": graphs,
               "speedup": plain["train_seconds"] / graphs["train_seconds"], "largest_loss_difference": worst}
        rows.append(row)
        print(f"{name:<30} {plain['steps']:>5} steps: training {plain['train_seconds']:6.1f} s plain, "
              f"{graphs['train_seconds']:6.1f} s with graphs ({row['speedup']:.2f}x); wall {plain['wall_seconds']:.1f}"
              f" / {graphs['wall_seconds']:.1f} s; final val/loss {plain['val_loss']:.5f} / {graphs['val_loss']:.5f};"
              f" largest loss difference {worst:.2e}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                              "budget": args.budget, "rows": rows}, indent=1))
    bad = [r["variant"] for r in rows if "error" in r or r.get("largest_loss_difference", 0) > TOLERANCE]
    if bad:
        raise SystemExit(f"CUDA graphs failed or changed the losses (> {TOLERANCE}) of: {', '.join(bad)}")


if __name__ == "__main__":
    main()
