"""One trial = one call of the core trainer inside a Ray worker, reporting to MLflow and to Ray Tune.

Ray Tune gets a small result at every metric report (for its live table and for Optuna). Checkpoints are the
core's own, in a folder per trial key under the sweep's storage path (`checkpoints/<trial_key>`), written
atomically: a retried trial or a resumed sweep trains on from the newest intact one found there. Tune is given
none: it records its newest checkpoint in a snapshot taken every few seconds and deletes older ones as new ones
arrive, so a sweep killed between the two could not be resumed (seen: "Could not recover from checkpoint as it
does not exist on storage anymore").
"""

import json
import logging
import time
import traceback
from pathlib import Path

import torch
from ray import tune

from loopmdm_core import distributed, failpoints, load_run_config, metrics, train
from loopmdm_core.config import apply_overrides
from loopmdm_core.train import pick_device, plan

from . import tracking

# Tune's result keys: no '/' (Tune treats it as nesting in its loggers and tables).
TUNE_KEYS = {metrics.TRAIN_LOSS: "train_loss", metrics.VAL_LOSS: "val_loss", metrics.FLOPS: "flops",
             metrics.TOKENS_PER_S: "tokens_per_s"}


def tune_metric(name: str) -> str:
    return TUNE_KEYS.get(name, name.replace("/", "_"))


def _log_inference(logger: tracking.TrialLogger, cfg, root: Path, infer: dict):
    """Score the trained weights at each inference loop count, measure attention among masked tokens, and
    (when asked) reasoning-task accuracy per loop schedule; log it all (once: a resumed trial whose run holds
    it already skips this) and keep the rows as an artifact."""
    from loopmdm_core.checkpoint import load_model
    from loopmdm_core.data import load_token_data
    from loopmdm_core.evaluate import inference_eval, task_eval
    if logger.client.get_metric_history(logger.run_id, metrics.INFER_VAL_LOSS):
        return
    began = time.perf_counter()
    model, _ = load_model(root, device=pick_device(cfg.train.device))
    data = load_token_data(cfg.data)
    out = inference_eval(model, data, cfg, infer["max_loops"], infer["attention_t"])
    task = infer["task"]
    rows = out["loop_scaling"]
    series = {metrics.INFER_VAL_LOSS: [(r["n_loops"], r["val_loss"]) for r in rows],
              metrics.INFER_FLOPS_PER_TOKEN: [(r["n_loops"], r["forward_flops_per_token"]) for r in rows]}
    if "attention" in out:
        series[metrics.MASK_TO_MASK] = [(i, r["mask_to_mask_share"]) for i, r in enumerate(out["attention"])]
    if task["problems"]:
        out["task"] = task_eval(model, data, cfg, task["test"], task["problems"], task["answer_tokens"],
                                task["steps"], task["schedules"])
        for row in out["task"]:
            series[metrics.TASK_ACCURACY + metrics.schedule_key(row["schedule"])] = [(0, row["accuracy"])]
            series[metrics.TASK_FLOPS + metrics.schedule_key(row["schedule"])] = [(0, row["forward_flops_per_problem"])]
        series[metrics.TASK_PROBLEMS] = [(0, out["task"][0]["problems"])]
    series[metrics.INFER_SECONDS] = [(0, time.perf_counter() - began)]
    # The artifact is a convenience copy: if the store is down it is skipped (the metrics are spooled).
    tracking.deliver(lambda: logger.client.log_text(logger.run_id, json.dumps(out, indent=2), "inference.json"))
    logger.log_series(series)  # one batch, one transaction: a retried trial finds all of it or none


def run_trial(space: dict):
    """The Ray Tune function trainable. `space["trial"]` is what the driver prepared (orchestrator.sweep);
    `space["search"]`, when present, holds values an Optuna searcher sampled (dotted config keys)."""
    trial = space["trial"]
    torch.set_num_threads(max(1, int(trial["cpus"])))  # one thread per CPU Ray gave the trial: no oversubscription
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not one INFO line per checkpoint in the driver
    config, run_id = trial["config"], trial.get("run_id")
    searched = space.get("search") or {}
    client = tracking.check_store(trial["tracking_uri"])
    if searched:  # a sampled config is a new trial: its own key and run
        from .spec import LR_TAG, trial_key
        cfg = load_run_config(apply_overrides(config, [f"{k}={v}" for k, v in searched.items()]))
        config = cfg.to_dict()
        key = trial_key(cfg)
        tags = {**trial["tags"], "loopmdm.trial_key": key, "loopmdm.search_cell": trial["key"],
                LR_TAG: str(cfg.train.lr)}  # Optuna may have sampled the lr
        run_id = tracking.open_trial_run(client, trial["experiment_id"], trial["parent_id"], key,
                                         f"{trial['name']}-{key[:6]}", tags, plan(cfg).config.to_dict(),
                                         trial["derived"])
    cfg = load_run_config(config)
    checkpoint_steps = set(plan(cfg).checkpoint_steps)
    logger = tracking.TrialLogger(trial["tracking_uri"], run_id)
    failpoints.reached("trial_start")
    root = Path(trial["checkpoint_root"]) / (key if searched else trial["key"])
    latest: dict = {}
    required = trial.get("required_metric")  # a searcher (Optuna) needs its metric in every result

    def sink(step: int, values: dict):
        logger(step, values)
        if step in checkpoint_steps:  # train() writes this step's checkpoint next: a resume starts after it,
            logger.flush()            # so MLflow must hold every step up to it first
        latest.update({tune_metric(k): v for k, v in values.items()}, step=step)
        if not required or required in latest:
            tune.report(dict(latest))

    try:
        # Several workers: this process is rank 0 (it logs and reports); the others train alongside it and
        # read the same checkpoint folder to resume. FLOPs and tokens are those of the whole batch.
        result = distributed.launch(trial.get("workers", 1), train, (cfg,), {"sink": sink, "checkpoint_dir": root},
                                    {"checkpoint_dir": root})
        if trial.get("infer"):
            _log_inference(logger, cfg, root, trial["infer"])
    except Exception as e:
        logger.finish("FAILED", error="".join(traceback.format_exception_only(type(e), e)).strip())
        raise
    except BaseException:  # stopped from outside (the driver ended): keep what was logged, stay resumable
        logger.flush()
        raise
    logger.client.set_tag(run_id, "loopmdm.attention_backend", result.attention_backend)
    logger.finish("FINISHED")
    if result.resumed_from == result.steps:  # nothing left to train: still hand Tune a final result
        tune.report({tune_metric(metrics.VAL_LOSS): result.val_loss, "step": result.steps})
