"""Where a first-wave trial's time goes before it trains: imports, CUDA context, the trainer's start-up, compiling.

python benchmarks/trial_startup.py [--sweep sweeps/lm_iso_flops_gpu.yaml] [--procs 1,5] [--cpus 2] [--steps 20]
                                   [--env KEY=VALUE] [--json F]
Starts --procs fresh Python processes at once (as a sweep's first wave starts its Ray workers), each with the
torch threads a trial gets (--cpus), and times in each: the imports a trial worker makes (torch, MLflow, Ray Tune,
then the rest of orchestrator.trainable), the CUDA context, and one short `train()` of the sweep's first trial
(--steps steps, no checkpoints), whose own phases (start-up, data, compile, training) come from its metrics.
Each count runs twice: with empty torch.compile caches (TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR in a fresh
folder, as on a fresh machine), then again with the caches that run filled (as in a later sweep). Prints the
median and the largest of each stage over the processes; --env sets a variable in every process (e.g.
TORCHINDUCTOR_COMPILE_THREADS=2) to compare a setting against a run without it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(config: dict, cpus: int, spawned: float) -> dict:
    """One worker's stages, in seconds; runs in the fresh process."""
    stages, last = {}, spawned

    def mark(name: str):
        nonlocal last
        now = time.time()
        stages[name], last = now - last, now

    mark("process start")  # interpreter start-up, until this line runs
    import torch
    mark("import torch")
    import mlflow  # noqa: F401
    mark("import mlflow")
    from ray import tune  # noqa: F401
    mark("import ray.tune")
    sys.path.insert(0, str(ROOT))
    import orchestrator.trainable  # noqa: F401
    from loopmdm_core import metrics
    from loopmdm_core.train import train
    mark("import the rest")
    torch.set_num_threads(cpus)
    if torch.cuda.is_available():  # (a CPU run of this script only checks that it runs)
        torch.zeros(1, device="cuda").add_(1)
        torch.cuda.synchronize()
    mark("CUDA context")
    logged = {}
    result = train(config, sink=lambda step, values: logged.update(values))
    mark("train() call")
    # as logged with the last step, before its evaluation: eval and checkpoint are still 0 then
    phases = {name: logged.get(key, 0.0) for name, key in metrics.PHASE_SECONDS.items()
              if name not in ("eval", "checkpoint")}
    return {"stages": stages, "phases": {**phases, "train": logged.get(metrics.TRAIN_SECONDS, 0.0)},
            "steps": result.steps}


def first_trial_config(sweep: str, steps: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from orchestrator import spec as specs
    from orchestrator import trials as trials_of
    trial = trials_of.longest_first(trials_of.expand(specs.load(sweep)))[0]
    cfg = trial.config.to_dict()
    per_step = trial.plan.flops_per_step
    cfg["train"].update(budget_flops=per_step * (steps + 0.5), log_every=10 ** 6)
    cfg["eval"].update(fractions=[1.0], n_batches=1)  # one small final evaluation: this is about what comes before
    return cfg


def wave(config: dict, procs: int, cpus: int, env: dict) -> list[dict]:
    spawned = time.time()
    children = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(config), str(cpus), repr(spawned)],
                                 env={**os.environ, "OMP_NUM_THREADS": str(cpus), **env}, stdout=subprocess.PIPE,
                                 text=True) for _ in range(procs)]
    out = []
    for c in children:
        stdout, _ = c.communicate()
        if c.returncode:
            raise SystemExit(f"a process failed ({c.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def summary(rows: list[dict]) -> dict:
    table = {}
    for group in ("stages", "phases"):
        for name in rows[0][group]:
            values = [r[group][name] for r in rows]
            table[name] = {"median": statistics.median(values), "max": max(values)}
    return table


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", default=str(ROOT / "sweeps" / "lm_iso_flops_gpu.yaml"),
                   help="the sweep whose first trial (longest first) each process trains")
    p.add_argument("--procs", default="1,5", help="processes started at once, one count after another")
    p.add_argument("--cpus", type=int, default=2, help="torch threads per process (a trial's resources.cpu)")
    p.add_argument("--steps", type=int, default=20, help="training steps of each process's short train()")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for every process, e.g. TORCHINDUCTOR_COMPILE_THREADS=1")
    p.add_argument("--json", help="also write every process's stages here")
    args = p.parse_args()
    config = first_trial_config(args.sweep, args.steps)
    env = dict(item.split("=", 1) for item in args.env)
    results = []
    for procs in (int(n) for n in args.procs.split(",")):
        caches = tempfile.mkdtemp(prefix="trial_startup_")
        cache_env = {"TORCHINDUCTOR_CACHE_DIR": f"{caches}/inductor", "TRITON_CACHE_DIR": f"{caches}/triton"}
        for caches_state in ("empty caches", "warm caches"):
            began = time.perf_counter()
            rows = wave(config, procs, args.cpus, {**env, **cache_env})
            wall = time.perf_counter() - began
            table = summary(rows)
            results.append({"procs": procs, "caches": caches_state, "wall": wall, "env": env, "table": table,
                            "rows": rows})
            print(f"\n{procs} process(es) at once, {caches_state}, {args.cpus} threads each"
                  f"{' ' + str(env) if env else ''}: {wall:.1f} s until the last one ended")
            for name, v in table.items():
                print(f"  {name:>16}: median {v['median']:6.2f} s, max {v['max']:6.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"sweep": args.sweep, "cpus": args.cpus, "steps": args.steps,
                                               "results": results}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))))
    else:
        main()
