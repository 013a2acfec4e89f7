"""Run a sweep: validate, prepare data and tracking in the driver, then Ray Tune runs the trials.

Everything that can fail on bad input (the file, the corpus, the tracking store) fails here, before Ray
starts. Resuming is the default: when the sweep's Ray experiment folder exists, `Tuner.restore` continues it
(finished trials are not re-run, unfinished ones restart from their last checkpoint) and the MLflow runs
are found again by their tags.

A sweep with `lr_ladder:` runs two Tune experiments under one MLflow parent run: the ladder (`<storage>/<name>`),
then, with each variant's lr chosen from the ladder runs' final metrics as MLflow holds them, the larger budgets
(`<storage>/<name>-stage2`). A resumed sweep restores the ladder, recomputes the same choice from the same runs,
then restores stage 2.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import RunTag

from loopmdm_core import metrics
from loopmdm_core.errors import ConfigError

from . import lr_ladder, replay, tracking
from .spec import Resources, SweepSpec
from .trials import SweepContext, TrialJob, TrialSpec, ladder_budget, later_trials, longest_first

log = logging.getLogger(__name__)
STATE_FILE = "loopmdm_sweep.json"  # in the Ray experiment folder: which sweep it holds
CHECKPOINTS = "checkpoints"  # in the Ray experiment folder: one folder of core checkpoints per trial key
STAGE2_SUFFIX = "-stage2"  # an lr_ladder sweep's larger budgets: a Tune experiment beside the ladder's


@dataclass
class SweepOutcome:
    parent_run_id: str
    tracking_uri: str
    experiment_path: Path
    finished: list[str] = field(default_factory=list)  # trial names
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> error
    interrupted: list[str] = field(default_factory=list)
    retried: dict[str, list[str]] = field(default_factory=dict)  # trial name -> the errors it was retried after
    seconds: float = 0.0  # wall time of this invocation of the sweep
    earlier_seconds: float = 0.0  # wall time of the invocations before it (an interrupted sweep resumed)
    train_seconds: float = 0.0  # sum over the trials of the time spent in training steps (perf/train_seconds)
    phase_seconds: dict = field(default_factory=dict)  # perf/<phase>_seconds -> sum over the trials
    slots: int = 0  # how many trials the cluster runs at a time (trial_slots)
    gpus: float = 0.0  # the GPUs those slots hold (held_gpus)
    workers: int = 1  # a trial's data-parallel processes, one GPU each (resources.n_workers)
    peak_seconds: float = 0.0  # sum over trials of training FLOPs / the peak of one of their GPUs (sweep_mfu)
    experiment_id: str = ""  # the MLflow experiment (tracking.sweep_url gives its page in the UI)
    replayed: int = 0  # metrics trials had spooled on this machine, delivered at the end of the sweep

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    @property
    def sweep_mfu(self) -> float | None:
        """The sweep's model FLOPs utilisation (docs/definitions.md): every trial's training FLOPs over the wall of
        all invocations, the GPUs the trials held and their peak; None without GPUs or a known peak."""
        wall = self.seconds + self.earlier_seconds
        return self.peak_seconds / (wall * self.gpus) if self.gpus and self.peak_seconds and wall else None


def sweep_key(spec: SweepSpec, trials: list[TrialSpec], experiment_path: Path) -> str:
    ident = [spec.name, str(experiment_path), sorted(t.key for t in trials),
             [(k, p.__dict__) for k, p in spec.search.params] if spec.search else None,
             dataclasses.asdict(spec.infer) if spec.infer else None]
    if spec.lr_ladder:  # appended only here: the keys of sweeps without a ladder stay what they were
        ident.append(list(spec.lr_ladder.values))
    return hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:16]


def prepare_data(trials: list[TrialSpec]):
    """Tokenize each corpus once, here, so concurrent trials find the cache instead of racing to build it, and
    a corpus that cannot feed a trial fails the sweep now rather than in every trial."""
    from loopmdm_core.data import load_token_data
    seen = set()
    for t in trials:
        if (t.config.data, t.config.train.batch_size) not in seen:
            seen.add((t.config.data, t.config.train.batch_size))
            load_token_data(t.config.data).require_batch(t.config.train.batch_size)


def trial_slots(resources: Resources, nodes: list[dict], max_concurrent: int = 0) -> int:
    """How many trials run at a time: on each node as many as both its CPUs and its GPUs hold, summed over the
    nodes, capped by max_concurrent. The sweep's closing line sets its wall against training time / this."""
    def fits(node: dict) -> int:
        counts = [int(node.get(key, 0.0) / need + 1e-9) for key, need in (("CPU", resources.cpu),
                                                                            ("GPU", resources.gpu)) if need > 0]
        return min(counts) if counts else 0
    slots = sum(fits(node) for node in nodes)
    return min(slots, max_concurrent) if max_concurrent else slots


def held_gpus(resources: Resources, nodes: list[dict], slots: int) -> float:
    """The GPUs the sweep's trials hold when every slot is busy: slots x resources.gpu, at most what the nodes have."""
    return min(slots * resources.gpu, sum(node.get("GPU", 0.0) for node in nodes))


def check_cluster(resources: Resources) -> list[dict]:
    """A trial must fit on one node of the cluster, or Ray would wait for it forever: fail now instead, with every
    resource that does not fit. Returns the alive nodes' resources."""
    import ray
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = []
    for name, key, need in (("cpu", "CPU", resources.cpu), ("gpu", "GPU", resources.gpu)):
        best = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if need > best:
            problems.append(f"resources.{name}: a trial asks for {need:g} {key}{'s' if need != 1 else ''}, but no "
                            f"node of the Ray cluster has more than {best:g}; lower resources.{name} (or add such a "
                            f"node)")
    if problems:
        raise ConfigError(problems)
    return nodes


# The tracking server's credentials, read from the driver's environment: trials on other nodes get them through
# the job's runtime environment (Ray keeps it in its GCS, behind the cluster's token), never through a file.
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


# Environment of every Ray worker. Tune reuses a worker (resources.reuse_workers) only if the previous trial's
# thread has ended within TUNE_FUNCTION_THREAD_TIMEOUT_S of the reset (2 s by default); otherwise it fails the
# next trial ("Could not re-use actor"), which may then be retried in a new process (start-up and compile again,
# one of its max_failures spent) or end failed.
# A thread ends only once its thread-local state is torn down; tests/test_lr_ladder.py makes that take 3 s, and
# before this wait a CPU sweep so delayed failed its reuses and then hung.
WORKER_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}


def init_ray(address: str | None, dashboard: bool):
    # Tune's classic CLIReporter gives one compact table of all trials (the newer output prints a box per
    # result); checkpoint snapshots every few steps are expected with tiny trials, not a bottleneck worth a warning.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    worker_env = {key: os.environ.get(key, value) for key, value in WORKER_ENV.items()}  # the user's value wins
    if address:
        secrets = {k: os.environ[k] for k in CREDENTIALS if os.environ.get(k)}
        ray.init(address=address, logging_level=logging.WARNING, runtime_env={"env_vars": {**worker_env, **secrets}})
    else:
        # A private local cluster ("local": never a `ray start` cluster that happens to run on this machine, which
        # a bare ray.init() would join): no dashboard unless asked (it is an HTTP server), bound to loopback. Its
        # workers inherit this process's environment, credentials included.
        os.environ.update(worker_env)
        ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 logging_level=logging.WARNING)


def run(spec: SweepSpec, trials: list[TrialSpec], later: list[TrialSpec], tracking_uri: str | None = None,
        address: str | None = None, restart: bool = False, resume_only: bool = False, dashboard: bool = False,
        verbose: int = 1) -> SweepOutcome:
    """Run the sweep's `trials` (trials.expand) and, with an lr ladder, its larger budgets at the chosen lrs
    (`later`: the same trials with the ladder's first lr standing in, trials.later_trials)."""
    start = time.monotonic()
    storage = Path(spec.storage_path or "ray_results").expanduser().resolve()
    experiment_path = storage / spec.name
    key = sweep_key(spec, trials + later, experiment_path)
    state_path = experiment_path / STATE_FILE
    resume = not restart and state_path.exists()
    if resume_only and not resume:
        raise ConfigError(f"--resume: {experiment_path} holds no run of sweep {spec.name!r} to resume; drop --resume "
                          f"to start it")
    if resume and json.loads(state_path.read_text())["sweep_key"] != key:
        raise ConfigError(f"{experiment_path} holds another version of sweep {spec.name!r} (the file changed "
                          f"since it ran); pass --restart to start it over, or give the sweep a new name")
    uri = tracking.resolve_uri(tracking_uri, spec.tracking.uri)
    ready = {}  # seconds of each step before the first trial can start: what a user waits for, shown to them
    with _timed(ready, "tracking store"):
        client = tracking.check_store(uri)
    with _timed(ready, "data"):
        prepare_data(trials + later)
    with _timed(ready, "Ray"):
        init_ray(address, dashboard)
        nodes = check_cluster(spec.resources)
    if restart and experiment_path.exists():
        shutil.rmtree(experiment_path)
    stage2_path = storage / (spec.name + STAGE2_SUFFIX)
    if spec.lr_ladder and not resume and stage2_path.exists():  # the stage 2 of a ladder now started over
        shutil.rmtree(stage2_path)

    exp_id = tracking.experiment_id(client, spec.name)
    parent_params = {"sweep.name": spec.name, "sweep.trials": len(trials) + len(later),
                     "sweep.budgets": list(spec.budgets), "sweep.seeds": list(spec.seeds),
                     "sweep.loops": [loop.as_list() for loop in spec.loops], "sweep.baselines": list(spec.baselines)}
    if spec.lr_ladder:
        parent_params["sweep.lr_ladder"] = list(spec.lr_ladder.values)
    parent_id = tracking.open_parent_run(client, exp_id, key, parent_params, spec.source, fresh=not resume)
    _publish_ui(client, spec, trials + later, uri, exp_id, parent_id)
    context = SweepContext(uri, exp_id, parent_id, spec.resources.cpu, spec.resources.n_workers,
                           str(experiment_path / CHECKPOINTS), spec.infer)
    jobs = [TrialJob.of(t, context) for t in longest_first(trials)]
    earlier = json.loads(state_path.read_text()).get("wall_seconds", 0.0) if resume else 0.0
    experiment_path.mkdir(parents=True, exist_ok=True)
    state = {"sweep_key": key, "parent_run_id": parent_id, "tracking_uri": tracking.redact(uri)}
    state_path.write_text(json.dumps({**state, "wall_seconds": earlier}))

    slots = trial_slots(spec.resources, nodes, spec.max_concurrent)
    outcome = SweepOutcome(parent_id, uri, experiment_path, experiment_id=exp_id, earlier_seconds=earlier,
                           slots=slots, gpus=held_gpus(spec.resources, nodes, slots),
                           workers=spec.resources.n_workers)
    print(f"sweep ready to start trials in {time.monotonic() - start:.1f} s (" +
          ", ".join(f"{step} {seconds:.1f} s" for step, seconds in ready.items()) + ")", flush=True)
    crash = None
    try:
        from . import tune_runner
        if spec.search:
            tune_runner.run_search(spec, jobs, storage, resume, verbose, outcome, client)
        else:
            tune_runner.run_grid(spec, jobs, experiment_path, resume, verbose, outcome)
        if spec.lr_ladder:
            jobs += _stage2(spec, client, context, trials, stage2_path, key, verbose, outcome)
    except BaseException as e:  # even a crash of the driver leaves no run RUNNING
        crash = f"sweep driver stopped: {type(e).__name__}: {e}"
        raise
    finally:
        _wait_for_store(client, exp_id)
        _deliver_spooled(client, exp_id, parent_id, outcome)
        _reconcile(client, exp_id, parent_id, [] if spec.search else [j.name for j in jobs], outcome)
        summary = crash or (f"{len(outcome.finished)} finished, {len(outcome.failed)} failed, "
                            f"{len(outcome.interrupted)} interrupted")
        tracking.end_run(client, parent_id, "FINISHED" if outcome.ok and not crash else "FAILED",
                         None if outcome.ok and not crash else summary)
        outcome.seconds = time.monotonic() - start
        state_path.write_text(json.dumps({**state, "wall_seconds": earlier + outcome.seconds}))
    return outcome


@contextlib.contextmanager
def _timed(into: dict, step: str):
    began = time.monotonic()
    yield
    into[step] = time.monotonic() - began


def _publish_ui(client, spec: SweepSpec, trials: list[TrialSpec], uri: str, exp_id: str, parent_id: str):
    """The MLflow UI's first screen for this sweep (tracking.publish_sweep_ui): what it runs on the parent run, and a
    view of every trial's loss against training FLOPs. Cosmetic: a store that refuses it only gets a warning."""
    lr = (f"ladder over {', '.join(f'{x:g}' for x in spec.lr_ladder.values)}, chosen per variant at the smallest "
          f"budget" if spec.lr_ladder else f"{spec.base.train.lr:g} for every variant")
    summary = tracking.sweep_summary(spec.name, parent_id, exp_id, list(dict.fromkeys(t.label for t in trials)),
                                     spec.budgets, spec.seeds, len(trials), lr=lr)
    task = any(t.config.data.task and t.config.data.task_format == "prompted" for t in trials)  # answer loss, accuracy
    keys = (metrics.VAL_LOSS, metrics.VAL_ANSWER_LOSS, metrics.VAL_ACCURACY) if task else (metrics.VAL_LOSS,)
    try:
        tracking.publish_sweep_ui(client, exp_id, parent_id, summary, keys, uri)
    except Exception as e:  # MLflow raises many types; the sweep does not depend on this
        log.warning(f"the MLflow UI view of the sweep could not be saved ({type(e).__name__}: {e}); its runs are "
                    f"logged as usual")


def _stage2(spec: SweepSpec, client, context: SweepContext, ladder: list[TrialSpec], path: Path, key: str,
            verbose: int, outcome: SweepOutcome) -> list[TrialJob]:
    """After the ladder: each variant's lr chosen from what MLflow holds, recorded, then the larger budgets at
    those lrs as a Tune experiment of their own (restored when it exists). Nothing while the ladder is
    incomplete (a trial neither finished nor failed: interrupted; the same command resumes it)."""
    runs = {r.data.tags.get(tracking.TRIAL_KEY_TAG): r
            for r in tracking.child_runs(client, context.experiment_id, context.parent_id)}
    finished = {t.key for t in ladder if t.key in runs and runs[t.key].info.status == "FINISHED"
                and t.name not in outcome.failed}
    waiting = [t.name for t in ladder if t.key not in finished and t.name not in outcome.failed]
    if waiting:
        log.warning(f"the lr ladder is not complete ({len(waiting)} trials not FINISHED in MLflow, e.g. {waiting[0]}): "
                    f"its larger budgets wait for the same command to run again (after orchestrator/replay.py if "
                    f"metrics were spooled)")
        return []
    choice = lr_ladder.choose_lrs([lr_ladder.LadderRun(t.label, t.lr, dict(runs[t.key].data.metrics)
                                                       if t.key in finished else None) for t in ladder])
    _record_choice(client, context.parent_id, ladder, runs, choice, ladder_budget(spec))
    for label in sorted({t.label for t in later_trials(spec)} - set(choice.chosen)):
        outcome.failed[f"{label} (larger budgets)"] = (f"no lr of the ladder finished every seed at budget "
                                                       f"{ladder_budget(spec):g}: not trained further")
    trials = later_trials(spec, choice.chosen)
    if not trials:
        return []
    _claim_stage2(path, key, choice.chosen)
    jobs = [TrialJob.of(t, context) for t in longest_first(trials)]
    from . import tune_runner
    tune_runner.run_grid(spec, jobs, path, True, verbose, outcome)
    return jobs


def _record_choice(client, parent_id: str, ladder: list[TrialSpec], runs: dict, choice: lr_ladder.LrChoice,
                   budget: float):
    """The choice on each ladder run (tag loopmdm.lr_ladder: chosen, else candidate) and on the parent run (tag
    loopmdm.lr_choice, artifact lr_ladder.json with every seed-mean loss). Idempotent: a resume sets the same."""
    for t in ladder:
        if t.key in runs:
            client.set_tag(runs[t.key].info.run_id, tracking.LADDER_TAG,
                           "chosen" if choice.chosen.get(t.label) == t.lr else "candidate")
    client.set_tag(parent_id, tracking.LR_CHOICE_TAG, json.dumps(choice.chosen, sort_keys=True, separators=(",", ":")))
    report = {"budget_flops": budget, "seeds": sorted({t.seed for t in ladder}), **choice.as_dict()}
    client.log_text(parent_id, json.dumps(report, indent=2), "lr_ladder.json")


def _claim_stage2(path: Path, key: str, chosen: dict):
    """Stage 2's folder records the choice it runs: Tune cannot restore an experiment whose trials changed, and
    the choice can change only if a ladder trial that had failed finished when the sweep was resumed."""
    state = {"sweep_key": key, "lr_choice": chosen}
    state_path = path / STATE_FILE
    if state_path.exists() and json.loads(state_path.read_text()) != state:
        raise ConfigError(f"{path} holds stage 2 of this sweep run with another lr choice "
                          f"({json.loads(state_path.read_text()).get('lr_choice')}; now {chosen}): a ladder trial "
                          f"that had failed finished on resume; pass --restart to run the sweep again")
    path.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps(state))


def _wait_for_store(client, exp_id: str):
    """Trials get through a store outage quickly (they spool), so a sweep can end while its store restarts: wait
    for it as a trial's start does (about a minute) before delivering, reconciling and closing the runs. A store
    still down after that is left to the calls that follow."""
    try:
        tracking.retrying(lambda: client.get_experiment(exp_id), attempts=tracking.STARTUP_ATTEMPTS)
    except Exception:  # MLflow raises many types; each call below says what it could not do
        pass


def _deliver_spooled(client, exp_id: str, parent_id: str, outcome: SweepOutcome):
    """What the sweep's trials spooled on this machine while the store was down, delivered now (what trials on
    other nodes spooled waits there for orchestrator/replay.py, unless $LOOPMDM_SPOOL is a folder all share)."""
    try:
        run_ids = {r.info.run_id for r in tracking.child_runs(client, exp_id, parent_id)}
        outcome.replayed = replay.replay_runs(client, tracking.spool_dir(), run_ids)
    except Exception as e:  # the store is down again: the spool files stay for replay.py
        log.warning(f"spooled metrics not delivered ({type(e).__name__}: {e}); run orchestrator/replay.py once the "
                    f"tracking store is back")


def _reconcile(client, exp_id: str, parent_id: str, expected: list[str], outcome: SweepOutcome):
    """No run is left RUNNING or SCHEDULED: a trial Ray saw fail is FAILED with its error; one the sweep never
    finished (interrupted) is KILLED, with how to resume. `expected`: the trial names the sweep ran, so a trial
    that never started (no run yet) counts as interrupted too."""
    seen = set()
    for run in tracking.child_runs(client, exp_id, parent_id):
        run_id, status, name = run.info.run_id, run.info.status, run.info.run_name
        seen.add(name)
        outcome.train_seconds += run.data.metrics.get(metrics.TRAIN_SECONDS, 0.0)
        # perf/mfu_run = FLOPs / (training seconds x workers x peak): its product with those two is FLOPs / peak
        outcome.peak_seconds += (run.data.metrics.get(metrics.MFU_RUN, 0.0) * outcome.workers *
                                 run.data.metrics.get(metrics.TRAIN_SECONDS, 0.0))
        for phase in (*metrics.PHASE_SECONDS.values(), metrics.INFER_SECONDS):
            outcome.phase_seconds[phase] = outcome.phase_seconds.get(phase, 0.0) + run.data.metrics.get(phase, 0.0)
        if name in outcome.retried:
            _tag_retries(client, run, outcome.retried[name])
        if name in outcome.failed and status != "FAILED":
            tracking.end_run(client, run_id, "FAILED", outcome.failed[name])
        elif status == "FINISHED" and name in expected and name not in outcome.finished:
            # Tune restored this trial finished but with an earlier result as its last (seen on a resumed LR
            # ladder's stage 2, reused workers): the run's FINISHED, set once everything was logged, is the record
            outcome.finished.append(name)
        elif status in ("RUNNING", "SCHEDULED"):
            if name not in outcome.failed:
                outcome.interrupted.append(name)
            tracking.end_run(client, run_id, "KILLED", "interrupted: run the same command again to resume")
    outcome.interrupted += [name for name in expected if name not in seen and name not in outcome.failed
                            and name not in outcome.finished]


def _tag_retries(client, run, errors: list[str]):
    """Count this invocation's retries of a trial onto its run, after those of earlier invocations (a resumed
    sweep): what lets a user find, in the MLflow UI, the trials that finished only after a crash."""
    tags = run.data.tags
    earlier = tags.get(tracking.RETRY_ERRORS_TAG, "").splitlines()
    lines = (earlier + errors)[-20:]  # the newest; a tag holds 8,000 characters at most
    count = int(tags.get(tracking.RETRIES_TAG, 0)) + len(errors)
    tracking.deliver(lambda: client.log_batch(run.info.run_id, tags=[
        RunTag(tracking.RETRIES_TAG, str(count)), RunTag(tracking.RETRY_ERRORS_TAG, "\n".join(lines)[-5000:])]))
