"""Reasoning-task accuracy vs inference loops and loop schedules: a looped model against its same-size and
depth-matched baselines at equal training FLOPs, trained on a task alone (data.corpus: none, prompted rows).

python benchmarks/task_loops.py [--task arithmetic] [--budget 6e12] [--problems 300] [--out /tmp/task_loops]
Trains loop [1,3) x 2 on 4 layers, the same-size 4-layer model and the depth-matched 6-layer model (width 64,
rows of 16 tokens, batch 128) on the task's train split, then scores exact-match accuracy on held-out test
problems for fixed loop counts 1..2x trained and the adaptive schedules (evaluate.default_schedules), with the
forward FLOPs per answer each costs. At the default budget each model trains in a few minutes on a laptop CPU.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from loopmdm_core import evaluate
from loopmdm_core.checkpoint import load_model
from loopmdm_core.config import load_run_config
from loopmdm_core.data import load_token_data
from loopmdm_core.device import pick_device
from loopmdm_core.train import train

# --variants name: (label, n_layers, loop_start, loop_end, n_loops)
VARIANTS = {"looped": ("loop[1,3)x2", 4, 1, 3, 2), "same_size": ("same_size(4L)", 4, 0, 4, 1),
            "depth_matched": ("depth_matched(6L)", 6, 0, 6, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="arithmetic", help="arithmetic[:DIGITS] or chains[:HOPS]")
    p.add_argument("--budget", type=float, default=6e12)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seq", type=int, default=16, help="row length: prompt + answer + EOS padding")
    p.add_argument("--problems", type=int, default=300)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default="/tmp/task_loops")
    args = p.parse_args()
    print(f"{'variant':<18} {'schedule':<22} {'accuracy':>8} {'fwd MFLOPs/answer':>18}")
    for key in args.variants.split(","):
        name, layers, start, end, n = VARIANTS[key]
        cfg = load_run_config({
            "data": {"corpus": "none", "task": args.task, "task_problems": 12000, "bpe_vocab_size": 300,
                     "seq_len": args.seq},
            "train": {"budget_flops": args.budget, "batch_size": 128, "lr": 3e-3, "log_every": 100},
            "eval": {"fractions": [1.0]},
            "model": {"n_layers": layers, "d_model": args.width, "n_heads": 4, "loop_start": start, "loop_end": end,
                      "n_loops": n}})
        folder = Path(args.out) / args.task.replace(":", "_") / name
        t0 = time.time()
        result = train(cfg, checkpoint_dir=folder)
        print(f"{name:<18} trained {result.steps} steps in {time.time() - t0:.0f} s, val loss {result.val_loss:.4f}",
              flush=True)
        model, _ = load_model(folder, device=pick_device("auto"))
        for row in evaluate.task_eval(model, load_token_data(cfg.data), cfg, "", args.problems, answer_tokens=4,
                                      n_steps=4):
            print(f"{name:<18} {row['schedule']:<22} {row['accuracy']:>8.3f} "
                  f"{row['forward_flops_per_problem'] / 1e6:>18.3f}", flush=True)


if __name__ == "__main__":
    main()
