"""Reasoning on a synthetic task: accuracy vs inference loops and loop schedules, looped vs same-size.

python benchmarks/arithmetic_loops.py [--budget 5e12] [--problems 200] [--out /tmp/arith]
Writes a 2-digit addition/subtraction corpus (tasks.arithmetic train split), trains a LoopMDM (loop [1,3) x 2)
and its same-size baseline on 10,000 of them at the same FLOPs budget, then scores exact-match accuracy on held-out test
problems at each inference loop count and under adaptive schedules, with the forward FLOPs each costs.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loopmdm_core import schedules, tasks  # noqa: E402
from loopmdm_core.checkpoint import load_model  # noqa: E402
from loopmdm_core.config import load_run_config  # noqa: E402
from loopmdm_core.data import load_token_data  # noqa: E402
from loopmdm_core.evaluate import task_accuracy  # noqa: E402
from loopmdm_core.train import train  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=5e12)
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--out", default="/tmp/arith")
    args = p.parse_args()
    out = Path(args.out)
    corpus = tasks.write_corpus(tasks.arithmetic(10000, "train"), out / "corpus" / "arith.jsonl")
    test = tasks.arithmetic(args.problems, "test")
    base = {"data": {"corpus": str(corpus), "bpe_vocab_size": 320, "seq_len": 64},
            "train": {"budget_flops": args.budget, "batch_size": 32, "lr": 1e-3},
            "eval": {"fractions": [0.5, 1.0]}}
    runs = {"loop[1,3)x2": {"n_layers": 4, "d_model": 128, "n_heads": 4, "loop_start": 1, "loop_end": 3, "n_loops": 2},
            "same_size(4L)": {"n_layers": 4, "d_model": 128, "n_heads": 4, "loop_start": 0, "loop_end": 4, "n_loops": 1}}
    print(f"{'variant':<14} {'schedule':<22} {'accuracy':>8} {'fwd GFLOPs/problem':>19}")
    for name, model_cfg in runs.items():
        cfg = load_run_config({**base, "model": model_cfg})
        result = train(cfg, checkpoint_dir=out / name)
        model, _ = load_model(out / name)
        data = load_token_data(cfg.data)
        specs = [f"fixed:{k}" for k in range(1, 2 * cfg.model.n_loops + 1)]
        if cfg.model.n_loops > 1:
            specs += ["ramp:3:1", "confidence:1:3:0.9", "convergence:0.05:1:4"]
        print(f"{name:<14} (val loss {result.val_loss:.3f} after {result.steps} steps)")
        for spec in specs:
            acc = task_accuracy(model, data.tokenizer, test, data.mask_id, answer_tokens=4, n_steps=4,
                                schedule=schedules.parse(spec))
            print(f"{name:<14} {spec:<22} {acc['accuracy']:>8.3f} {acc['forward_flops'] / len(test) / 1e9:>19.3f}")


if __name__ == "__main__":
    main()
