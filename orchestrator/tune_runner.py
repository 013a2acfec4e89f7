"""The Ray Tune part of a sweep: a grid Tuner over the prepared trials, or one Optuna study per variant cell."""

import dataclasses
import json
import logging
from pathlib import Path

from ray import tune

from . import tracking
from .trainable import run_trial, tune_metric
from .trials import TrialJob, job_name

log = logging.getLogger(__name__)
PROGRESS_COLUMNS = {"step": "step", "train_loss": "train loss", "val_loss": "val loss", "flops": "FLOPs",
                    "tokens_per_s": "tok/s"}


# Trials Tune started again after a failure (a crashed or lost worker, a reused worker that could not be reset):
# MLflow run name -> the gist of each error it was retried after (_last_error). Such a trial may still finish, and
# without this nothing would say it took more than one attempt. Module state, not the callback's: Tuner.restore unpickles the callbacks of
# the sweep's first launch, so a callback holding its own dict would fill a copy no one reads.
RETRIED: dict[str, list[str]] = {}


class _Retries(tune.Callback):
    def on_trial_recover(self, iteration, trials, trial, **info):
        try:
            RETRIED.setdefault(_run_name(trial.config), []).append(_last_error(trial.error_file))
        except Exception as e:  # reporting a retry must never stop the sweep: Tune does not catch it
            log.warning(f"could not record the retry of trial {trial}: {type(e).__name__}: {e}")


def _last_error(path) -> str:
    """The gist of the newest failure in a Tune trial's error file (read where Tune has just written it, before any
    sync to storage): its last line not indented, which is the exception of a Python traceback and the cause of
    an actor's death ("The actor is dead because its worker process has died. ...")."""
    try:
        text = Path(path).read_text()
    except (OSError, TypeError):
        return "no error recorded"
    newest = text.rsplit("Failure # ", 1)[-1].splitlines()[1:]
    lines = [line for line in newest if line.strip() and not line[0].isspace()]
    return lines[-1].strip()[:500] if lines else "no error recorded"


def _run_name(config: dict) -> str:
    """The MLflow run name of the Tune trial with this param space: an Optuna sample is a run of its own."""
    if config.get("search"):
        return TrialJob.from_dict(config["trial"]).sampled(config["search"]).name
    return job_name(config)


def _trainable(spec):
    return tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _run_config(spec, storage: Path, name: str, verbose: int) -> tune.RunConfig:
    reporter = tune.CLIReporter(metric_columns=PROGRESS_COLUMNS, parameter_columns={"trial/config/train/lr": "lr"},
                                max_report_frequency=15,
                                max_progress_rows=50, sort_by_metric=False)
    return tune.RunConfig(name=name, storage_path=str(storage),
                          failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                          progress_reporter=reporter, verbose=verbose, callbacks=[_Retries()])


def _trial_name(trial) -> str:
    return job_name(trial.config)


def _collect(results, outcome):
    """Tune's verdict on each trial: failed (with its error) or finished (its last result is `done`). A trial
    that an interrupted sweep stopped, or never started (Tune then holds no config for it), is neither: the
    reconciliation with MLflow counts it as interrupted."""
    for result in results:
        if result.config is None:
            continue
        name = job_name(result.config)
        if result.error is not None:
            outcome.failed[name] = str(result.error).strip().splitlines()[-1][:2000]
        elif (result.metrics or {}).get("done") and name not in outcome.failed:
            outcome.finished.append(name)


def _fit(trainable, param_space, path: Path, resume: bool, tune_config, run_config, outcome):
    RETRIED.clear()
    try:
        if resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space,
                                       resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        return tuner.fit()
    finally:  # an interrupted fit still reports the retries it saw
        for name, errors in RETRIED.items():
            outcome.retried.setdefault(name, []).extend(errors)


def run_grid(spec, jobs: list[TrialJob], path: Path, resume: bool, verbose: int, outcome):
    """Every trial once, as one Tune experiment in folder `path` (<storage>/<name>; an lr ladder's stage 2 has
    its own)."""
    tune_config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent or None,
                                  reuse_actors=spec.resources.reuse_workers, trial_name_creator=_trial_name,
                                  trial_dirname_creator=lambda t: f"{_trial_name(t)}-{t.trial_id}")
    results = _fit(_trainable(spec), {"trial": tune.grid_search([j.to_dict() for j in jobs])}, path, resume,
                   tune_config, _run_config(spec, path.parent, path.name, verbose), outcome)
    _collect(results, outcome)


def _distribution(param):
    if param.distribution == "loguniform":
        return tune.loguniform(param.low, param.high)
    if param.distribution == "uniform":
        return tune.uniform(param.low, param.high)
    if param.distribution == "int":
        return tune.randint(int(param.low), int(param.high) + 1)
    return tune.choice(list(param.choices))


def run_search(spec, jobs: list[TrialJob], storage: Path, resume: bool, verbose: int, outcome, client):
    """One Optuna study per variant cell (Optuna samples continuous spaces, it cannot also walk a grid): each
    cell is its own Tuner with `n_trials` samples. The best sample of each cell is recorded on the parent run."""
    from ray.tune.search.optuna import OptunaSearch
    metric = tune_metric(spec.search.metric)
    best = {}
    for job in jobs:
        cell = f"{spec.name}-{job.name}"
        space = {"trial": dataclasses.replace(job, search_metric=metric).to_dict(),
                 "search": {k: _distribution(p) for k, p in spec.search.params}}
        tune_config = tune.TuneConfig(search_alg=OptunaSearch(metric=metric, mode="min", seed=job.seed),
                                      num_samples=spec.search.n_trials,
                                      max_concurrent_trials=spec.max_concurrent or None,
                                      reuse_actors=spec.resources.reuse_workers, trial_name_creator=_trial_name,
                                      trial_dirname_creator=lambda t: f"{_trial_name(t)}-{t.trial_id}")
        results = _fit(_trainable(spec), space, storage / cell, resume, tune_config,
                       _run_config(spec, storage, cell, verbose), outcome)
        results = [r for r in results if r.config is not None]  # not started (an interrupted sweep): no sample yet
        for result in results:
            name = f"{job.name}[{json.dumps(result.config.get('search', {}), sort_keys=True)}]"
            if result.error is not None:
                outcome.failed[name] = str(result.error).strip().splitlines()[-1][:2000]
            elif (result.metrics or {}).get("done"):
                outcome.finished.append(name)
        good = [r for r in results if r.error is None and r.metrics and metric in r.metrics]
        if good:
            top = min(good, key=lambda r: r.metrics[metric])
            best[job.name] = {"search": top.config["search"], spec.search.metric: top.metrics[metric]}
            client.set_tag(job.sweep.parent_id, tracking.BEST_TAG + job.key,
                           json.dumps({"trial": job.name, **best[job.name]})[:5000])
    if jobs:
        client.log_text(jobs[0].sweep.parent_id, json.dumps(best, indent=2), "best_configs.json")
