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

import ray
import torch
from mlflow.entities import RunTag
from ray import tune

from loopmdm_core import distributed, failpoints, metrics, train
from loopmdm_core.config import RunConfig
from loopmdm_core.device import pick_device
from loopmdm_core.plan import plan

from . import tracking
from .spec import Infer
from .trials import TrialJob

# Tune's result keys: no '/' (Tune treats it as nesting in its loggers and tables).
TUNE_KEYS = {metrics.TRAIN_LOSS: "train_loss", metrics.VAL_LOSS: "val_loss", metrics.FLOPS: "flops",
             metrics.TOKENS_PER_S: "tokens_per_s"}


def tune_metric(name: str) -> str:
    return TUNE_KEYS.get(name, name.replace("/", "_"))


def _log_inference(logger: tracking.TrialLogger, cfg: RunConfig, root: Path, infer: Infer):
    """Score the trained weights at each inference loop count, measure attention among masked tokens, and
    (when asked) reasoning-task accuracy per loop schedule; log it all (once: a resumed trial whose run holds
    it already skips this) and keep the rows as an artifact."""
    from loopmdm_core.checkpoint import load_model
    from loopmdm_core.data import load_token_data
    from loopmdm_core.evaluate import inference_eval, task_eval
    if tracking.retrying(lambda: logger.client.get_metric_history(logger.run_id, metrics.INFER_VAL_LOSS)):
        return
    began = time.perf_counter()
    model, _ = load_model(root, device=pick_device(cfg.train.device))
    data = load_token_data(cfg.data)
    out = inference_eval(model, data, cfg, infer.max_loops, infer.attention_t)
    task = infer.task
    rows = out["loop_scaling"]
    series = {metrics.INFER_VAL_LOSS: [(r["n_loops"], r["val_loss"]) for r in rows],
              metrics.INFER_FLOPS_PER_TOKEN: [(r["n_loops"], r["forward_flops_per_token"]) for r in rows]}
    if "attention" in out:
        series[metrics.MASK_TO_MASK] = [(i, r["mask_to_mask_share"]) for i, r in enumerate(out["attention"])]
    if task.problems:
        out["task"] = task_eval(model, data, cfg, task.test, task.problems, task.answer_tokens, task.steps,
                                task.schedules)
        for row in out["task"]:
            series[metrics.TASK_ACCURACY + metrics.schedule_key(row["schedule"])] = [(0, row["accuracy"])]
            series[metrics.TASK_FLOPS + metrics.schedule_key(row["schedule"])] = [(0, row["forward_flops_per_problem"])]
        series[metrics.TASK_PROBLEMS] = [(0, out["task"][0]["problems"])]
    series[metrics.INFER_SECONDS] = [(0, time.perf_counter() - began)]
    # The artifact is a convenience copy: if the store is down it is skipped (the metrics are spooled).
    tracking.deliver(lambda: logger.client.log_text(logger.run_id, json.dumps(out, indent=2), "inference.json"))
    logger.log_series(series)  # one batch, one transaction: a retried trial finds all of it or none


def _open(job: TrialJob, run) -> tracking.TrialLogger:
    """The trial's run and its logger. Opened here, the one place a trial's run is opened: created on the first
    attempt, found again by the trial's key by a retry or a resumed sweep. The run records the node this attempt
    runs on (a retry after a lost node runs elsewhere)."""
    sweep = job.sweep
    client = tracking.check_store(sweep.tracking_uri)
    run_id = tracking.open_trial_run(client, sweep.experiment_id, sweep.parent_id, job.key, job.name, job.tags,
                                     run.config.to_dict(), job.derived)
    client.set_tag(run_id, tracking.NODE_TAG, ray.get_runtime_context().get_node_id())
    return tracking.TrialLogger(sweep.tracking_uri, run_id)


def run_trial(space: dict):
    """The Ray Tune function trainable. `space["trial"]` is a serialized TrialJob (orchestrator.trials);
    `space["search"]`, when present, holds the values an Optuna searcher sampled (dotted config keys)."""
    job = TrialJob.from_dict(space["trial"])
    if space.get("search"):  # a sampled config is a trial of its own: its own key and run
        job = job.sampled(space["search"])
    sweep = job.sweep
    torch.set_num_threads(max(1, int(sweep.cpus)))  # one thread per CPU Ray gave the trial: no oversubscription
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not one INFO line per checkpoint in the driver
    run = plan(job.config)
    # wait out a restarting server rather than fail the trial, whose retries would meet the same outage
    logger = tracking.retrying(lambda: _open(job, run), attempts=tracking.STARTUP_ATTEMPTS)
    failpoints.reached("trial_start")
    root = Path(sweep.checkpoint_root) / job.key
    checkpoint_steps = set(run.checkpoint_steps)
    latest: dict = {}

    def sink(step: int, values: dict):
        logger(step, values)
        if step in checkpoint_steps:  # train() writes this step's checkpoint next: a resume starts after it,
            logger.flush()            # so MLflow must hold every step up to it first
        latest.update({tune_metric(k): v for k, v in values.items()}, step=step)
        if not job.search_metric or job.search_metric in latest:  # a searcher needs its metric in every result
            tune.report(dict(latest))

    try:
        # Several workers: this process is rank 0 (it logs and reports); the others train alongside it and
        # read the same checkpoint folder to resume. FLOPs and tokens are those of the whole batch.
        result = distributed.launch(sweep.workers, train, (run,), {"sink": sink, "checkpoint_dir": root},
                                    {"checkpoint_dir": root})
        if sweep.infer:
            _log_inference(logger, run.config, root, sweep.infer)
    except Exception as e:
        logger.finish("FAILED", error="".join(traceback.format_exception_only(type(e), e)).strip())
        raise
    except BaseException:  # stopped from outside (the driver ended): keep what was logged, stay resumable
        logger.flush()
        raise
    tracking.deliver(lambda: logger.client.log_batch(logger.run_id, tags=[
        RunTag(tracking.BACKEND_TAG, result.attention_backend),
        RunTag(tracking.RESUMED_FROM_TAG, str(result.resumed_from))]))
    logger.finish("FINISHED")
    if result.resumed_from == result.steps:  # nothing left to train: still hand Tune a final result
        tune.report({tune_metric(metrics.VAL_LOSS): result.val_loss, "step": result.steps})
