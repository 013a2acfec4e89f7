"""Cost of MLflow logging per training step, as the sweep's trials log (TrialLogger: buffered log_batch).

python benchmarks/tracking_cost.py [--steps 2000] [--flush-every 10] [--uri sqlite:///...]
Logs `steps` reports of the 7 per-step metrics into a fresh SQLite store (or --uri), flushing every
`flush-every` reports, and prints the wall time per step, beside one log_metric call per value as the baseline.
"""

import argparse
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from loopmdm_core import metrics
from orchestrator.tracking import TrialLogger, check_store


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--flush-every", type=int, default=10)
    parser.add_argument("--uri")
    args = parser.parse_args()
    uri = args.uri or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    client = check_store(uri)
    exp = client.create_experiment(f"bench-{time.time()}")
    values = {metrics.TRAIN_LOSS: 3.0, metrics.FLOPS: 1e12, metrics.TOKENS: 1e6, metrics.LR: 1e-3,
              metrics.TOKENS_PER_S: 1e4, metrics.MFU: 0.3, metrics.VAL_LOSS: 3.1}

    run = client.create_run(exp)
    logger = TrialLogger(uri, run.info.run_id, flush_seconds=float("inf"))
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        logger(step, values)
        if step % args.flush_every == 0:
            logger.flush()
    logger.finish("FINISHED")
    batched = (time.perf_counter() - start) / args.steps

    run = client.create_run(exp)
    n = max(1, args.steps // 10)
    start = time.perf_counter()
    for step in range(1, n + 1):
        for key, value in values.items():
            MlflowClient(uri).log_metric(run.info.run_id, key, value, step=step)
    single = (time.perf_counter() - start) / n
    print(f"store {uri}")
    print(f"TrialLogger (log_batch every {args.flush_every} steps): {batched * 1e3:.3f} ms per step of {len(values)} metrics")
    print(f"log_metric per value (baseline, {n} steps): {single * 1e3:.3f} ms per step ({single / batched:.1f}x)")


if __name__ == "__main__":
    main()
