"""A synthetic sweep written into a real MLflow store, with known answers: for the report's tests and the
benchmarks that need a store (report_scale.py, mlflow_ui_check.py). Each loop variant's curve is its same-size
baseline's curve shifted by a known FLOPs factor."""

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

STEPS = 20
LR = 1e-3  # every trial's train.lr without an LR ladder
LR_LADDER = (3e-4, 1e-3, 3e-3)  # the learning rates of an LR ladder
CANDIDATE_SHIFT = 0.5  # a ladder LR that was not chosen needs 2x the FLOPs to the same loss
TASK_PROBLEMS = 100  # eval.task_problems of task trials


def power(flops, A=60.0, alpha=0.25):
    return A * np.asarray(flops, dtype=float) ** -alpha  # a pure power law: exact in log-log interpolation


def answer_loss(flops, shift):
    """val/answer_loss: the same power law with the FLOPs shift squared (looping helps the answers more), so a
    report on answer loss gives known speedups that differ from those on val/loss (3x there: 9x here)."""
    return power(np.asarray(flops, dtype=float) * shift ** 2)


def accuracy(flops, shift):
    """val/accuracy: linear in log10 of the shifted FLOPs (0.5 at 1e12), so it is read off exactly by log-C
    interpolation: a variant shifted by s reaches a baseline's final accuracy with s x fewer FLOPs."""
    return np.clip(0.5 + 0.2 * np.log10(np.asarray(flops, dtype=float) * shift / 1e12), 0.0, 1.0)


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
               noise=0.0, extra_failed: int = 0, copies: int = 1, inference: bool = False,
               lr_ladder: dict[str, float] | None = None, task: bool = False) -> str:
    """Write a parent run and its trials; `loops` holds (n_loops, speedup over same-size) pairs, a speedup either
    one number or a tuple of one per seed (in `seeds` order: seeds that reach and seeds that do not). Returns the
    parent run id. `copies` multiplies the trials (distinct seeds) to build large stores. `lr_ladder`: the chosen
    learning rate per variant (same_size, loop, depth_matched) of a ladder over LR_LADDER: every trial is tagged
    'chosen' and, at the smallest budget, each other ladder LR gets a 'candidate' trial per seed whose curve is
    shifted by CANDIDATE_SHIFT. `task`: val/answer_loss and val/accuracy series too (answer_loss(), accuracy())."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    parent = client.create_run(exp_id, tags={"loopmdm.role": "sweep", "mlflow.runName": "synthetic"}).info.run_id
    rng = np.random.default_rng(0)
    all_seeds = [s + 1000 * c for c in range(copies) for s in seeds]
    variants = [("same_size", "same_size(4L)", 4, 1, 4, 1.0)]  # variant, label, n_layers, n_loops, applied, shift
    for n_loops, speed in loops:
        applied = 4 + 2 * (n_loops - 1)
        variants += [("loop", f"loop[1,3)x{n_loops}", 4, n_loops, applied, speed),
                     ("depth_matched", f"depth_matched({applied}L)", applied, 1, applied, depth_factor)]

    def trial(variant, label, budget, seed, n_layers, n_loops, applied, shift, status="FINISHED", lr=None):
        chosen = lr is None  # an LR-ladder candidate is given its LR; every other trial uses its variant's own
        lr = (lr_ladder or {}).get(variant, LR) if chosen else lr
        tags = {"mlflow.parentRunId": parent, "loopmdm.role": "trial", "loopmdm.variant": variant,
                "loopmdm.label": label, "loopmdm.group": f"b{budget:.3g}-s{seed}", "loopmdm.seed": str(seed),
                "loopmdm.budget_flops": f"{budget:g}", "loopmdm.trial_key": f"{label}-{budget}-{seed}-{lr:g}"}
        if lr_ladder:
            tags["loopmdm.lr_ladder"] = "chosen" if chosen else "candidate"
            shift = shift if chosen else shift * CANDIDATE_SHIFT
        run = client.create_run(exp_id, run_name=f"{label}-b{budget:.3g}-s{seed}" + ("" if chosen else f"-lr{lr:g}"),
                                tags=tags)
        run_id = run.info.run_id
        params = {"model.n_layers": n_layers, "model.loop_start": 1 if variant == "loop" else 0,
                  "model.loop_end": 3 if variant == "loop" else n_layers, "model.n_loops": n_loops,
                  "derived.params": 1000 * n_layers if variant != "loop" else 4000,
                  "derived.flops_per_token": 100 * applied, "derived.applied_layers": applied, "train.lr": lr}
        if task:
            params["eval.task_problems"] = TASK_PROBLEMS
        for key, value in params.items():
            client.log_param(run_id, key, value)
        flops = np.linspace(budget / STEPS, budget, STEPS)
        loss = power(flops * shift) * (1 + noise * rng.standard_normal(STEPS))
        series = {"flops": flops, "val/loss": loss}
        if task:
            series.update({"val/answer_loss": answer_loss(flops, shift), "val/accuracy": accuracy(flops, shift)})
        batch = [Metric(k, float(v[i]), 0, i + 1) for i in range(STEPS) for k, v in series.items()]
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
        for i, seed in enumerate(all_seeds):
            # at the smallest budget of a ladder, the chosen LR's trial, then one candidate per other ladder LR
            lrs = [None] + [lr for lr in LR_LADDER if lr_ladder and budget == min(budgets)]
            for variant, label, n_layers, n_loops, applied, shift in variants:
                shifts = np.atleast_1d(shift)
                for lr in lrs:
                    if lr is None or lr != lr_ladder.get(variant, LR):
                        trial(variant, label, budget, seed, n_layers, n_loops, applied, float(shifts[i % len(shifts)]),
                              lr=lr)
    for i in range(extra_failed):
        trial("loop", "loop[1,3)x9", budgets[0], 99 + i, 4, 9, 20, 1.0, status="FAILED")
    client.set_terminated(parent, "FINISHED")
    return parent
