"""What a sweep of short trials spends besides training, with and without reusing Ray worker processes.

python benchmarks/sweep_reuse.py [--sweep sweeps/lm_iso_flops_gpu.yaml] [--seeds 3] [--budget B] [--gpu G]
                                 [--train KEY=VALUE] [--arms fresh,reused] [--out /tmp/sweep_reuse] [--json F]
Takes a sweep file's base, loops and baselines at its smallest budget or --budget (no lr ladder: every variant at
base.train.lr; --gpu replaces resources.gpu, --train sets base.train keys),
runs it twice through orchestrator/run_sweep.py exactly as users do, first with `resources.reuse_workers: false`
(a fresh process per trial, the default), then `true`, and prints each run's wall time, its training time summed
over trials, the per-phase sums from MLflow (perf/*_seconds), and the ratio of the two walls. Both runs train the
same trials (the same trial keys), so any difference is overhead; their final validation losses must agree.
Each run's wall is also given against its training time summed over trials / the trials that run at a time (as
the driver counts them): 1.0 would mean every slot trained all the time. And how many worker processes Tune
used (from its result records), how many reuses it gave up ("Could not re-use actor") and how many
workers crashed ("Fatal Python error"), from the driver's log, which is kept as <out>/<arm>/driver.log.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopmdm_core import metrics  # noqa: E402
from orchestrator import spec, tracking  # noqa: E402

PHASES = {"train": metrics.TRAIN_SECONDS, **{p: m for p, m in metrics.PHASE_SECONDS.items()},
          "infer": metrics.INFER_SECONDS}


def sweep_variant(source: dict, seeds: int, reuse: bool, name: str, budget: float, gpu: float | None = None,
                  train: dict | None = None) -> dict:
    data = {k: v for k, v in source.items() if k != "lr_ladder"}
    resources = {**source.get("resources", {}), "reuse_workers": reuse, **({"gpu": gpu} if gpu else {})}
    base = {**data["base"], "train": {**data["base"].get("train", {}), **(train or {})}}
    return {**data, "name": name, "base": base, "budgets": [budget], "seeds": list(range(seeds)),
            "resources": resources}


def run(folder: Path, sweep: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sweep['name']}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    began, launched = time.perf_counter(), time.time()
    out = subprocess.run([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), str(path), "-q"], cwd=folder,
                         capture_output=True, text=True)
    wall = time.perf_counter() - began
    (folder / "driver.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"sweep {sweep['name']} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name(sweep["name"])
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    sums = {phase: sum(r.data.metrics.get(key, 0.0) for r in trials) for phase, key in PHASES.items()}
    # how many trials ran at a time, as the driver counted them for its closing line (sweep.trial_slots)
    slots = int(re.search(r"(\d+) at a time: wall", out.stdout).group(1))
    # each trial's run from opening to closing, in seconds after the command was launched: where the wall went
    timeline = [{"label": r.data.tags.get(tracking.LABEL_TAG), "seed": r.data.tags.get(tracking.SEED_TAG),
                 "start_s": r.info.start_time / 1e3 - launched, "end_s": r.info.end_time / 1e3 - launched,
                 metrics.VAL_LOSS: r.data.metrics.get(metrics.VAL_LOSS),
                 **{key: r.data.metrics.get(key) for key in PHASES.values()}}
                for r in sorted(trials, key=lambda r: r.info.start_time)]
    ready = next((line for line in out.stdout.splitlines() if line.startswith("sweep ready")), None)
    # Tune's record of each trial's process (its last result): a trial that could not take over a finished
    # trial's worker started a process of its own
    records = (p.read_text().strip() for p in (folder / "ray_results" / sweep["name"]).glob("*/result.json"))
    workers = {(row["hostname"], row["pid"]) for row in (json.loads(text.splitlines()[-1]) for text in records if text)}
    return {"name": sweep["name"], "trials": len(trials), "wall_seconds": wall, "phase_seconds": sums,
            "concurrency": slots, "wall_over_train_per_slot": wall / (sums["train"] / slots), "driver": ready,
            "worker_processes": len(workers),
            "failed_reuses": (out.stdout + out.stderr).count("Could not re-use actor"),
            "worker_crashes": (out.stdout + out.stderr).count("Fatal Python error"),  # Ray folds repeats: at least
            "val_loss": {r.data.tags[tracking.TRIAL_KEY_TAG]: r.data.metrics[metrics.VAL_LOSS] for r in trials},
            "timeline": timeline}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", default=str(ROOT / "sweeps" / "lm_iso_flops_gpu.yaml"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, help="the one budget to run (default: the sweep's smallest)")
    p.add_argument("--gpu", type=float, help="resources.gpu for every trial (default: the sweep's)")
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="set base.train.KEY (a YAML value), e.g. --train cuda_graphs=true")
    p.add_argument("--arms", default="fresh,reused", help="which of the two runs (one alone: several device calls)")
    p.add_argument("--out", default="/tmp/sweep_reuse")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    source = yaml.safe_load(Path(args.sweep).read_text())
    # the budgets as the sweep parser reads them: PyYAML alone reads 3.0e14 (no sign in the exponent) as a string,
    # and min() of strings once picked 1e15 here
    budget = args.budget or min(spec.load(args.sweep).budgets)
    arms = args.arms.split(",")
    train = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.train)}
    runs = [run(out / name, sweep_variant(source, args.seeds, reuse, name, budget, args.gpu, train))
            for name, reuse in (("fresh", False), ("reused", True)) if name in arms]
    for r in runs:
        phases = ", ".join(f"{k} {v:.0f}" for k, v in r["phase_seconds"].items())
        print(f"{r['name']:>6}: {r['trials']} trials, {r['wall_seconds']:.0f} s wall; summed over trials (s): {phases}")
        print(f"        wall / (summed training / {r['concurrency']} at a time): {r['wall_over_train_per_slot']:.2f}")
        print(f"        {r['worker_processes']} worker processes for {r['trials']} trials; in the driver's log: "
              f"{r['failed_reuses']} failed reuses, {r['worker_crashes']} crashed workers")
        print(f"        {r['driver']}; first trial run opened at {r['timeline'][0]['start_s']:.1f} s, last closed "
              f"at {max(t['end_s'] for t in r['timeline']):.1f} s")
    ratio = None
    if len(runs) == 2:
        fresh, reused = runs[0]["val_loss"], runs[1]["val_loss"]
        assert fresh.keys() == reused.keys(), "the two runs trained different trials"
        worst = max(abs(fresh[k] - reused[k]) for k in fresh)
        print(f"final val/loss, reused vs fresh processes: largest difference {worst:.2e} over {len(fresh)} trials")
        ratio = runs[1]["wall_seconds"] / runs[0]["wall_seconds"]
        print(f"wall, reused / fresh processes: {ratio:.2f}")
        assert worst < 1e-4, "a reused process trained differently"
    if args.json:
        Path(args.json).write_text(json.dumps({"sweep": args.sweep, "budget": budget, "gpu": args.gpu,
                                               "train": train, "runs": runs, "wall_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
