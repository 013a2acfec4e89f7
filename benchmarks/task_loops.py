"""Reasoning-task accuracy vs inference loops and loop schedules: a looped model against its same-size
baseline at equal training FLOPs, trained on a task alone (data.corpus: none).

python benchmarks/task_loops.py [--task arithmetic] [--budget 3e14] [--problems 300] [--out /tmp/task_loops]
Trains loop [1,3) x 2 and the same-size 4-layer model (width 128, seq 64, batch 64) on the task's train split,
then scores exact-match accuracy on held-out test problems for fixed loop counts 1..2x trained and the adaptive
schedules (evaluate.default_schedules), with the forward FLOPs per answer each costs. The learned regime needs
~1e14+ FLOPs (thousands of steps): minutes on a GPU, hours on a laptop CPU.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from loopmdm_core import schedules, tasks
from loopmdm_core.checkpoint import load_model
from loopmdm_core.config import load_run_config
from loopmdm_core.data import load_token_data
from loopmdm_core.evaluate import default_schedules, task_accuracy
from loopmdm_core.train import pick_device, train

VARIANTS = {"loop[1,3)x2": (1, 3, 2), "same_size(4L)": (0, 4, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="arithmetic", help="arithmetic[:DIGITS] or chains[:HOPS]")
    p.add_argument("--budget", type=float, default=3e14)
    p.add_argument("--problems", type=int, default=300)
    p.add_argument("--out", default="/tmp/task_loops")
    args = p.parse_args()
    short = args.task.startswith("chains")  # one-digit answers: the digit and the end of the document
    answer_tokens = 2 if short else 4
    test = tasks.problems(args.task, "test", args.problems)
    print(f"{'variant':<14} {'schedule':<22} {'accuracy':>8} {'fwd GFLOPs/answer':>18}")
    for name, (start, end, n) in VARIANTS.items():
        cfg = load_run_config({
            "data": {"corpus": "none", "task": args.task, "task_problems": 12000 if not short else 50000,
                     "bpe_vocab_size": 300, "seq_len": 64},
            "train": {"budget_flops": args.budget, "batch_size": 64, "lr": 1e-3},
            "eval": {"fractions": [0.5, 1.0]},
            "model": {"n_layers": 4, "d_model": 128, "n_heads": 4, "loop_start": start, "loop_end": end,
                      "n_loops": n}})
        folder = Path(args.out) / args.task.replace(":", "_") / name
        t0 = time.time()
        result = train(cfg, checkpoint_dir=folder)
        print(f"{name:<14} trained {result.steps} steps in {time.time() - t0:.0f} s, val loss {result.val_loss:.4f}")
        model, _ = load_model(folder, device=pick_device("auto"))
        data = load_token_data(cfg.data)
        for spec in default_schedules(n):
            acc = task_accuracy(model, data.tokenizer, test, data.mask_id, answer_tokens, n_steps=answer_tokens,
                                schedule=schedules.parse(spec))
            print(f"{name:<14} {spec:<22} {acc['accuracy']:>8.3f} {acc['forward_flops'] / len(test) / 1e9:>18.4f}")


if __name__ == "__main__":
    main()
