"""Load: a sweep of many tiny trials at high concurrency, through real Ray Tune and MLflow on SQLite.

python benchmarks/sweep_load.py [--seeds 50] [--concurrency 8] [--out /tmp/sweep_load]
Each seed gives two trials (a loop and its same-size baseline), so the default is 100 trials. Runs the driver
as users do (orchestrator/run_sweep.py) and samples its resident memory every second; prints the wall time,
the driver's peak and its memory at a quarter and at the end of the trials (growth), and checks that MLflow holds
exactly one FINISHED run per trial and that no metric step is logged twice.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--out", default="/tmp/sweep_load")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.jsonl"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_documents
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_documents(24, 400)))
    sweep = {"name": "load", "base": {
                 "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
                 "data": {"corpus": str(corpus), "bpe_vocab_size": 320, "seq_len": 32, "val_fraction": 0.2},
                 "train": {"batch_size": 8, "log_every": 2},
                 "eval": {"fractions": [0.5, 1.0], "n_batches": 1, "batch_size": 4, "n_t": 2}},
             "loops": {"loop_start": [0], "loop_end": [1], "n_loops": [2]}, "baselines": ["same_size"],
             "budgets": [1e9], "seeds": list(range(args.seeds)),
             "resources": {"cpu": 2 / args.concurrency}, "max_concurrent": args.concurrency, "max_failures": 1}
    (out / "load.yaml").write_text(yaml.safe_dump(sweep))
    (out / "mlflow.db").unlink(missing_ok=True)
    shutil.rmtree(out / "ray_results", ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), "load.yaml", "-q"],
                            cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []  # (seconds, driver RSS MiB)
    while proc.poll() is None:
        rss = rss_mib(proc.pid)
        if rss is not None:
            samples.append((time.monotonic() - start, rss))
        time.sleep(1.0)
    output = proc.stdout.read()
    wall = time.monotonic() - start
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("load")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=10000)
            if r.data.tags.get("loopmdm.role") == "trial"]
    statuses = sorted({r.info.status for r in runs})
    duplicated = sum(len(h) != len({m.step for m in h}) for r in runs
                     for h in [client.get_metric_history(r.info.run_id, "flops")])
    trials = 2 * args.seeds
    quarter = [rss for t, rss in samples if t >= wall / 4][:1]
    print(output[-800:])
    print(f"{trials} trials at concurrency {args.concurrency}: exit {proc.returncode}, wall {wall:.0f} s; "
          f"MLflow: {len(runs)} trial runs ({', '.join(statuses)}), {duplicated} with a duplicated step")
    print(f"driver RSS: peak {max(r for _, r in samples):.0f} MiB; at 1/4 of the wall time "
          f"{quarter[0] if quarter else float('nan'):.0f} MiB, at the end {samples[-1][1]:.0f} MiB")
    if proc.returncode != 0 or len(runs) != trials or statuses != ["FINISHED"] or duplicated:
        sys.exit(1)


if __name__ == "__main__":
    main()
