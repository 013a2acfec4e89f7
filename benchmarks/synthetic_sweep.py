"""A synthetic sweep written into a real MLflow store, with known answers: for the report's tests and its
scale benchmark. Each loop variant's curve is its same-size baseline's curve shifted by a known FLOPs factor."""

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

STEPS = 20


def power(flops, A=60.0, alpha=0.25):
    return A * np.asarray(flops, dtype=float) ** -alpha  # a pure power law: exact in log-log interpolation


def task_metrics(n_loops: int) -> dict[str, float]:
    """Task accuracy per schedule over 100 problems: fixed k costs k GFLOPs per answer and scores 0.1 * k up to
    the trained count (flat after it); a looped model's ramp schedule scores like its trained count for 1.5
    GFLOPs, so at n_loops = 2 it saves 25% against fixed:2."""
    out = {"task/problems": 100.0}
    for k in range(1, 2 * n_loops + 1):
        out[f"task/accuracy/fixed_{k}"] = 0.1 * min(k, n_loops)
        out[f"task/forward_flops_per_problem/fixed_{k}"] = k * 1e9
    if n_loops > 1:
        out[f"task/accuracy/ramp_{2 * n_loops}_1"] = 0.1 * n_loops
        out[f"task/forward_flops_per_problem/ramp_{2 * n_loops}_1"] = 1.5e9
    return out


def make_sweep(uri: str, name: str, budgets=(1e12, 3e12), seeds=(0, 1), loops=((2, 3.0),), depth_factor=1.5,
               noise=0.0, extra_failed: int = 0, copies: int = 1, inference: bool = False) -> str:
    """Write a parent run and its trials; `loops` holds (n_loops, speedup over same-size) pairs. Returns the
    parent run id. `copies` multiplies the trials (distinct seeds) to build large stores."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    parent = client.create_run(exp_id, tags={"loopmdm.role": "sweep", "mlflow.runName": "synthetic"}).info.run_id
    rng = np.random.default_rng(0)
    all_seeds = [s + 1000 * c for c in range(copies) for s in seeds]

    def trial(variant, label, budget, seed, n_layers, n_loops, applied, shift, status="FINISHED"):
        run = client.create_run(exp_id, run_name=f"{label}-b{budget:.3g}-s{seed}", tags={
            "mlflow.parentRunId": parent, "loopmdm.role": "trial", "loopmdm.variant": variant,
            "loopmdm.label": label, "loopmdm.group": f"b{budget:.3g}-s{seed}", "loopmdm.seed": str(seed),
            "loopmdm.budget_flops": f"{budget:g}", "loopmdm.trial_key": f"{label}-{budget}-{seed}"})
        run_id = run.info.run_id
        for key, value in {"model.n_layers": n_layers, "model.loop_start": 1 if variant == "loop" else 0,
                           "model.loop_end": 3 if variant == "loop" else n_layers, "model.n_loops": n_loops,
                           "derived.params": 1000 * n_layers if variant != "loop" else 4000,
                           "derived.flops_per_token": 100 * applied, "derived.applied_layers": applied}.items():
            client.log_param(run_id, key, value)
        flops = np.linspace(budget / STEPS, budget, STEPS)
        loss = power(flops * shift) * (1 + noise * rng.standard_normal(STEPS))
        batch = [Metric(k, float(v), 0, step) for step, (c, l) in enumerate(zip(flops, loss), 1)
                 for k, v in (("flops", c), ("val/loss", l))]
        if inference:  # loss at inference loop counts 1..2n: best at the trained count; attention shares
            batch += [Metric("infer/val_loss", float(loss[-1] + 0.01 * abs(k - n_loops)), 0, k)
                      for k in range(1, 2 * n_loops + 1)]
            batch += [Metric("attn/mask_to_mask", 0.5 + 0.01 * i, 0, i) for i in range(applied)]
            batch += [Metric(k, v, 0, 0) for k, v in task_metrics(n_loops).items()]
        client.log_batch(run_id, metrics=batch)
        if status == "FAILED":
            client.set_tag(run_id, "loopmdm.error", "RuntimeError: synthetic failure")
        client.set_terminated(run_id, status)

    for budget in budgets:
        for seed in all_seeds:
            trial("same_size", "same_size(4L)", budget, seed, 4, 1, 4, 1.0)
            for n_loops, speed in loops:
                applied = 4 + 2 * (n_loops - 1)
                trial("loop", f"loop[1,3)x{n_loops}", budget, seed, 4, n_loops, applied, speed)
                trial("depth_matched", f"depth_matched({applied}L)", budget, seed, applied, 1, applied, depth_factor)
    for i in range(extra_failed):
        trial("loop", "loop[1,3)x9", budgets[0], 99 + i, 4, 9, 20, 1.0, status="FAILED")
    client.set_terminated(parent, "FINISHED")
    return parent
