"""How long a trial's thread lives on after its function returned, with and without train.cuda_graphs (CUDA only).

python benchmarks/trial_thread_exit.py [--budget 3e13] [--repeats 2] [--out thread_exit.json]

Why it matters: Ray Tune runs a function trainable in a thread of the worker process. To reuse that worker for
the next trial (`resources.reuse_workers`), Tune's reset joins the previous trial's thread and gives up after
TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s by default): the trial is then failed ("Could not re-use actor"), retried in
a new process (start-up and compile again) and charged one of its max_failures. This script trains the LM
campaign's shape (benchmarks/cuda_graphs.py) in a thread, as Tune does, and prints how long the thread took to
end after the training function returned.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from benchmarks.cuda_graphs import VARIANTS, config  # noqa: E402
from loopmdm_core.train import train  # noqa: E402


def thread_exit_seconds(cfg) -> dict:
    returned = {}

    def body():
        result = train(cfg)
        returned["train_seconds"] = result.train_seconds
        returned["at"] = time.perf_counter()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join()
    ended = time.perf_counter()
    return {"train_seconds": returned["train_seconds"], "exit_seconds": ended - returned["at"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=3e13)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("CUDA graphs need a CUDA device")
    rows = []
    for graphs in (False, True):
        for variant in ("same_size", "loop x2"):
            for repeat in range(args.repeats):
                row = {"cuda_graphs": graphs, "variant": variant, "repeat": repeat,
                       **thread_exit_seconds(config(args.budget, VARIANTS[variant], graphs))}
                rows.append(row)
                print(f"cuda_graphs={graphs!s:5} {variant:9} #{repeat}: trained {row['train_seconds']:.1f} s, thread "
                      f"ended {row['exit_seconds']:.3f} s after the function returned", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
