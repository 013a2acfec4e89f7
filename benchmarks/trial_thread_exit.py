"""train.cuda_graphs in a thread, as a sweep trial runs: are the graphs used, and how long does the thread live on
after train() returned? (CUDA only.)

python benchmarks/trial_thread_exit.py [--budget 3e13] [--out thread_exit.json]

Why it matters: Ray Tune runs a function trainable in a thread of the worker process. To reuse that worker for
the next trial (`resources.reuse_workers`), Tune's reset joins the previous trial's thread and gives up after
TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s by default; the sweep driver raises it). And Inductor may skip CUDA graphs
silently (it counts each skip in torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]; set
TORCH_LOGS=perf_hints for the reasons). This script trains the LM campaign's shape (benchmarks/cuda_graphs.py) with
and without graphs, in the main thread and in a thread of its own, and prints per run: training seconds, the
final validation loss, the CUDA-graph skips Inductor counted, and (in a thread) how long the thread took to end
after train() returned.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from benchmarks.cuda_graphs import VARIANTS, config  # noqa: E402
from loopmdm_core.train import train  # noqa: E402


def run(cfg, in_thread: bool) -> dict:
    torch.compiler.reset()  # a first compilation, as in a trial's fresh process (see benchmarks/cuda_graphs.py)
    out = {}
    skips = counters["inductor"]["cudagraph_skips"]

    def body():
        result = train(cfg)
        out.update(train_seconds=result.train_seconds, val_loss=result.val_loss, returned=time.perf_counter())

    if not in_thread:
        body()
        return {**out, "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips}
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join()
    return {**out, "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips,
            "thread_exit_seconds": time.perf_counter() - out["returned"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=3e13)
    p.add_argument("--runs", default="plain-main,plain-thread,graphs-main,graphs-thread",
                   help="which runs, in this order, in one process: graphs-thread alone is a process whose first "
                        "CUDA graphs are those of a thread, as in a sweep trial")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("CUDA graphs need a CUDA device")
    rows = []
    for name in args.runs.split(","):
        graphs, in_thread = name.split("-")[0] == "graphs", name.split("-")[1] == "thread"
        row = {"cuda_graphs": graphs, "where": "thread" if in_thread else "main thread",
               **run(config(args.budget, VARIANTS["same_size"], graphs), in_thread)}
        row.pop("returned")
        rows.append(row)
        exit_s = f", thread ended {row['thread_exit_seconds']:.3f} s after train() returned" if in_thread else ""
        print(f"cuda_graphs={graphs!s:5} {row['where']:11}: trained {row['train_seconds']:.2f} s, final val/loss "
              f"{row['val_loss']:.6f}, CUDA-graph skips {row['cudagraph_skips']}{exit_s}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
