"""Run a sweep: validate, prepare data and tracking in the driver, then Ray Tune runs the trials.

Everything that can fail on bad input (the file, the corpus, the tracking store) fails here, before Ray
starts. Resuming is the default: when the sweep's Ray experiment folder exists, `Tuner.restore` continues it
(finished trials are not re-run, unfinished ones restart from their last checkpoint) and the MLflow runs
are found again by their tags.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopmdm_core import metrics
from loopmdm_core.errors import ConfigError

from . import spec as specs
from . import tracking

log = logging.getLogger(__name__)
STATE_FILE = "loopmdm_sweep.json"  # in the Ray experiment folder: which sweep it holds
CHECKPOINTS = "checkpoints"  # in the Ray experiment folder: one folder of core checkpoints per trial key


@dataclass
class SweepOutcome:
    parent_run_id: str
    tracking_uri: str
    experiment_path: Path
    finished: list[str] = field(default_factory=list)  # trial names
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> error
    interrupted: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole sweep invocation
    train_seconds: float = 0.0  # sum over the trials of the time spent in training steps (perf/train_seconds)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def sweep_key(spec: specs.SweepSpec, trials: list[specs.TrialSpec], experiment_path: Path) -> str:
    ident = [spec.name, str(experiment_path), sorted(t.key for t in trials),
             [(k, p.__dict__) for k, p in spec.search.params] if spec.search else None,
             dataclasses.asdict(spec.infer) if spec.infer else None]
    return hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:16]


def prepare_data(trials: list[specs.TrialSpec]):
    """Tokenize each corpus once, here, so concurrent trials find the cache instead of racing to build it, and
    a corpus that cannot feed a trial fails the sweep now rather than in every trial."""
    from loopmdm_core.data import load_token_data
    seen = set()
    for t in trials:
        if (t.config.data, t.config.train.batch_size) not in seen:
            seen.add((t.config.data, t.config.train.batch_size))
            load_token_data(t.config.data).require_batch(t.config.train.batch_size)


def check_cluster(resources: specs.Resources):
    """A trial must fit on one node of the cluster, or Ray would wait for it forever: fail now instead."""
    import ray
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for name, key, need in (("cpu", "CPU", resources.cpu), ("gpu", "GPU", resources.gpu)):
        best = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if need > best:
            raise ConfigError(f"resources.{name}: a trial asks for {need:g} {key}{'s' if need != 1 else ''}, but no "
                              f"node of the Ray cluster has more than {best:g}; lower resources.{name} (or add "
                              f"such a node)")


def init_ray(address: str | None, dashboard: bool):
    # Tune's classic CLIReporter gives one compact table of all trials (the newer output prints a box per
    # result); checkpoint snapshots every few steps are expected with tiny trials, not a bottleneck worth a warning.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # A private local cluster: no dashboard unless asked (it is an HTTP server), bound to loopback.
        ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", logging_level=logging.WARNING)


def run(spec: specs.SweepSpec, tracking_uri: str | None = None, address: str | None = None,
        restart: bool = False, dashboard: bool = False, verbose: int = 1) -> SweepOutcome:
    start = time.monotonic()
    trials = specs.expand(spec)
    uri = tracking.resolve_uri(tracking_uri, spec.tracking.uri)
    client = tracking.check_store(uri)
    prepare_data(trials)
    init_ray(address, dashboard)
    check_cluster(spec.resources)

    storage = Path(spec.storage_path or "ray_results").expanduser().resolve()
    experiment_path = storage / spec.name
    key = sweep_key(spec, trials, experiment_path)
    state_path = experiment_path / STATE_FILE
    resume = not restart and state_path.exists()
    if resume and json.loads(state_path.read_text())["sweep_key"] != key:
        raise ConfigError(f"{experiment_path} holds another version of sweep {spec.name!r} (the file changed "
                          f"since it ran); pass --restart to start it over, or give the sweep a new name")
    if restart and experiment_path.exists():
        shutil.rmtree(experiment_path)

    exp_id = tracking.experiment_id(client, spec.name)
    parent_params = {"sweep.name": spec.name, "sweep.trials": len(trials),
                     "sweep.budgets": list(spec.budgets), "sweep.seeds": list(spec.seeds),
                     "sweep.loops": [list(x) for x in spec.loops], "sweep.baselines": list(spec.baselines)}
    parent_id = tracking.open_parent_run(client, exp_id, key, parent_params, spec.source, fresh=not resume)
    cpus = spec.resources.cpu
    trial_dicts = []
    for t in trials:
        name = f"{t.label}-b{t.budget_flops:.3g}-s{t.seed}"
        derived = {"derived.params": t.plan.params, "derived.flops_per_token": t.plan.flops_per_token,
                   "derived.steps": t.plan.steps, "derived.applied_layers": t.config.model.applied_layers()}
        # params and config.yaml show the resolved config (model.vocab_size filled in from the tokenizer)
        run_id = None if spec.search else tracking.open_trial_run(client, exp_id, parent_id, t.key, name, t.tags,
                                                                  t.plan.config.to_dict(), derived)
        trial_dicts.append({"key": t.key, "name": name, "run_id": run_id, "config": t.config.to_dict(),
                            "tracking_uri": uri, "experiment_id": exp_id, "parent_id": parent_id, "tags": t.tags,
                            "derived": derived, "cpus": cpus, "workers": spec.resources.n_workers,
                            "checkpoint_root": str(experiment_path / CHECKPOINTS),
                            "infer": dataclasses.asdict(spec.infer) if spec.infer else None})
    experiment_path.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"sweep_key": key, "parent_run_id": parent_id,
                                      "tracking_uri": tracking.redact(uri)}))

    outcome = SweepOutcome(parent_id, uri, experiment_path)
    crash = None
    try:
        from . import tune_runner
        if spec.search:
            tune_runner.run_search(spec, trial_dicts, storage, resume, verbose, outcome, client)
        else:
            tune_runner.run_grid(spec, trial_dicts, storage, resume, verbose, outcome)
    except BaseException as e:  # even a crash of the driver leaves no run RUNNING
        crash = f"sweep driver stopped: {type(e).__name__}: {e}"
        raise
    finally:
        _reconcile(client, exp_id, parent_id, trial_dicts, outcome)
        summary = crash or (f"{len(outcome.finished)} finished, {len(outcome.failed)} failed, "
                            f"{len(outcome.interrupted)} interrupted")
        tracking.end_run(client, parent_id, "FINISHED" if outcome.ok and not crash else "FAILED",
                         None if outcome.ok and not crash else summary)
    outcome.seconds = time.monotonic() - start
    return outcome


def _reconcile(client, exp_id: str, parent_id: str, trial_dicts: list[dict], outcome: SweepOutcome):
    """No run is left RUNNING or SCHEDULED: a trial Ray saw fail is FAILED with its error; one the sweep never
    finished (interrupted) is KILLED, with how to resume."""
    names = {t["run_id"]: t["name"] for t in trial_dicts if t["run_id"]}
    for run in tracking.child_runs(client, exp_id, parent_id):
        run_id, status = run.info.run_id, run.info.status
        outcome.train_seconds += run.data.metrics.get(metrics.TRAIN_SECONDS, 0.0)
        name = names.get(run_id, run.info.run_name)
        if name in outcome.failed and status != "FAILED":
            tracking.end_run(client, run_id, "FAILED", outcome.failed[name])
        elif status in ("RUNNING", "SCHEDULED"):
            if name not in outcome.failed:
                outcome.interrupted.append(name)
            tracking.end_run(client, run_id, "KILLED", "interrupted: run the same command again to resume")
