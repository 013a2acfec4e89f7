"""MLflow side of a sweep: the store, one parent run per sweep, one child run per trial, batched metrics.

Runs are found again by tags, never by memory: the parent by `loopmdm.sweep_key` (the sweep's name and
storage folder), a trial by `loopmdm.trial_key` under that parent. So a resumed sweep reopens the same runs
and a trial logs only steps after the last one its run holds: nothing is duplicated.

The MLflow UI's first screen (the end of this file): the experiment opens on its runs (not MLflow 3's GenAI
view), each sweep has a saved view plotting every trial's validation loss against training FLOPs, reached by one
URL (sweep_url), and the parent run's description says what the sweep ran and, once orchestrator/report.py ran,
its speedups (describe_sweep).
"""

import datetime
import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from loopmdm_core import failpoints, flatten, metrics
from loopmdm_core.errors import LoopMDMError

DEFAULT_DB = "mlflow.db"
# Run tags: what the report and a resumed sweep read back (docs/mlflow.md lists them all).
ERROR_TAG = "loopmdm.error"  # why a run failed or was killed
ROLE_TAG = "loopmdm.role"  # sweep (the parent run) | trial
SWEEP_KEY_TAG = "loopmdm.sweep_key"  # parent run: the sweep's identity; a resumed sweep finds its parent by it
TRIAL_KEY_TAG = "loopmdm.trial_key"  # trial run: hash of its run config; a retried trial finds its run by it
VARIANT_TAG = "loopmdm.variant"  # loop | same_size | depth_matched
LABEL_TAG = "loopmdm.label"  # e.g. loop[1,3)x2, same_size(4L)
GROUP_TAG = "loopmdm.group"  # the trials compared with each other: b<budget>-s<seed>
SEED_TAG = "loopmdm.seed"
BUDGET_TAG = "loopmdm.budget_flops"
LR_TAG = "loopmdm.lr"  # the trial's learning rate, str(float)
LADDER_TAG = "loopmdm.lr_ladder"  # lr_ladder sweeps only: candidate (a ladder lr not chosen) or chosen
LR_CHOICE_TAG = "loopmdm.lr_choice"  # on the parent run: JSON {variant label: chosen lr}
SEARCH_CELL_TAG = "loopmdm.search_cell"  # an Optuna sample's run: the trial key of the cell it was sampled in
BEST_TAG = "loopmdm.best."  # + a cell's trial key, on the parent run: the cell's best sample
BACKEND_TAG = "loopmdm.attention_backend"  # the attention kernel the trial trained with
NODE_TAG = "loopmdm.node"  # the Ray node id of the trial's latest attempt
RESUMED_FROM_TAG = "loopmdm.resumed_from"  # the step the trial's last attempt started from (0: from scratch)
RETRIES_TAG = "loopmdm.retries"  # how many times Tune started the trial again after a failure (absent: never)
RETRY_ERRORS_TAG = "loopmdm.retry_errors"  # the errors those attempts ended with, one a line, the newest last
STEP_METRIC = metrics.FLOPS  # logged at every reported step: its history tells the last step a run holds


class TrackingError(LoopMDMError):
    """The tracking store cannot be reached or used."""


def redact(uri: str) -> str:
    """The URI with any password replaced by *** (for messages and files)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")  # a bare path ending so is taken for a SQLite database


def resolve_uri(cli_uri: str | None = None, spec_uri: str = "") -> str:
    """--tracking-uri, then the sweep's tracking.uri, then MLFLOW_TRACKING_URI, then sqlite:///<cwd>/mlflow.db.

    Relative SQLite and file paths are made absolute: Ray runs trials in other working directories. A URI with
    a password in it is refused: it would travel into Ray's trial state and the sweep file's artifact.
    """
    uri = cli_uri or spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    if uri.startswith(("http://", "https://")) and urllib.parse.urlsplit(uri).password is not None:
        raise TrackingError(f"tracking URI {redact(uri)} holds a password: set MLFLOW_TRACKING_USERNAME and "
                            f"MLFLOW_TRACKING_PASSWORD in the environment instead (they are never logged)")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    elif uri.startswith("file:") and not uri.startswith("file:///"):
        uri = Path(uri[len("file:"):]).resolve().as_uri()
    elif "://" not in uri and Path(uri).suffix in SQLITE_SUFFIXES:  # a bare path to a database file: SQLite
        uri = "sqlite:///" + str(Path(uri).expanduser().resolve())
    elif "://" not in uri:  # a bare path: MLflow treats it as a file store
        uri = Path(uri).expanduser().resolve().as_uri()
    return uri


def check_store(uri: str) -> MlflowClient:
    """Make sure the store answers (creating a SQLite database and its tables here, in the driver, because
    trials creating it at the same moment race). TrackingError with the fix otherwise."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(f"tracking server {uri} is unreachable ({getattr(e, 'reason', e)}); start it "
                                f"(mlflow server ...) or pass another --tracking-uri") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking URI {uri}: folder {folder} does not exist")
    elif uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
        database = path if path.suffix in SQLITE_SUFFIXES else path / "mlflow.db"
        raise TrackingError(f"tracking URI {uri}: MLflow refuses file stores unless MLFLOW_ALLOW_FILE_STORE=true; "
                            f"use a SQLite database there instead: --tracking-uri sqlite:///{database}")
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as e:  # MLflow raises many types for a broken store
        status = re.search(r"error code (401|403)\b", str(e))
        if status:  # one line naming the fix; the password itself is never printed
            who = os.environ.get("MLFLOW_TRACKING_USERNAME")
            raise TrackingError(
                f"tracking server {uri} refused the credentials (HTTP {status.group(1)}) of "
                f"{'user ' + repr(who) if who else 'an anonymous client'}: set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD to an account of that server (with permission to create experiments)"
            ) from None
        raise TrackingError(f"tracking store {uri} is not usable: {e}") from None
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name)
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"experiment {name!r} is deleted in the tracking store; restore it (mlflow "
                            f"experiments restore) or rename the sweep")
    return exp.experiment_id


def _find(client: MlflowClient, exp_id: str, filter_string: str):
    runs = client.search_runs([exp_id], filter_string=filter_string, order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0] if runs else None


def _log_params(client: MlflowClient, run_id: str, params: dict):
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        client.log_batch(run_id, params=items[i:i + 100])


def open_parent_run(client: MlflowClient, exp_id: str, sweep_key: str, params: dict, sweep_yaml: str,
                    fresh: bool) -> str:
    """The sweep's parent run: reopened when resuming (same sweep_key), created otherwise."""
    if not fresh:
        found = _find(client, exp_id, f"tags.`{SWEEP_KEY_TAG}` = '{sweep_key}' and tags.`{ROLE_TAG}` = 'sweep'")
        if found:
            client.update_run(found.info.run_id, status="RUNNING")
            if ERROR_TAG in found.data.tags:  # why the last invocation stopped: no longer true once resumed
                client.delete_tag(found.info.run_id, ERROR_TAG)
            return found.info.run_id
    run = client.create_run(exp_id, tags={ROLE_TAG: "sweep", SWEEP_KEY_TAG: sweep_key,
                                          "mlflow.runName": f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"})
    _log_params(client, run.info.run_id, params)
    client.log_text(run.info.run_id, sweep_yaml, "sweep.yaml")
    return run.info.run_id


def open_trial_run(client: MlflowClient, exp_id: str, parent_id: str, key: str, name: str, tags: dict,
                   config: dict, derived: dict) -> str:
    """The trial's child run, found by its trial_key under the parent, or created (SCHEDULED) with params
    (the flattened config and what it implies) and the resolved config as an artifact."""
    found = _find(client, exp_id, f"tags.`{TRIAL_KEY_TAG}` = '{key}' and tags.`mlflow.parentRunId` = '{parent_id}'")
    if found:
        return found.info.run_id
    run = client.create_run(exp_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent_id})
    run_id = run.info.run_id
    _log_params(client, run_id, {**flatten(config), **derived})
    client.log_text(run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")
    client.update_run(run_id, status="SCHEDULED")
    return run_id


def child_runs(client: MlflowClient, exp_id: str, parent_id: str) -> list:
    return list(client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                   max_results=50000))


def end_run(client: MlflowClient, run_id: str, status: str, error: str | None = None):
    if error:
        client.set_tag(run_id, ERROR_TAG, error[:5000])
    client.set_terminated(run_id, status=status)


MAX_BATCH_METRICS = 1000  # MLflow's log_batch takes at most this many metrics per call


def log_metrics(client: MlflowClient, run_id: str, batch: list):
    """Log `batch` (mlflow Metric objects) in as few log_batch calls as MLflow allows."""
    for i in range(0, len(batch), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=batch[i:i + MAX_BATCH_METRICS])


def spool_dir() -> Path:
    """Where metrics that could not be delivered wait for `orchestrator/replay.py`: $LOOPMDM_SPOOL, else
    ~/.cache/loopmdm/mlflow_spool (on the machine that ran the trial)."""
    return Path(os.environ.get("LOOPMDM_SPOOL") or Path.home() / ".cache" / "loopmdm" / "mlflow_spool").expanduser()


# Calls that cannot go on without the store (a trial opening its run, a sweep closing its runs) wait this many
# attempts for it, doubling from 0.5 s: about a minute, what a restarting tracking server takes
STARTUP_ATTEMPTS = 8


def retrying(call, attempts: int = 4, first_wait: float = 0.5):
    """call()'s value, calling it `attempts` times at most with doubling waits (a SQLite store busy with other
    writers, a server restarting); the last attempt's exception when every one failed."""
    wait = first_wait
    for attempt in range(attempts):
        try:
            return call()
        except Exception:  # MLflow raises MlflowException, requests and SQLAlchemy errors: all mean "not now"
            if attempt == attempts - 1:
                raise
            time.sleep(wait)
            wait *= 2


def deliver(send, attempts: int = 4, first_wait: float = 0.5) -> bool:
    """send() with retries (`retrying`); False when every attempt failed (the caller spools what it sent)."""
    try:
        retrying(send, attempts, first_wait)
        return True
    except Exception:
        return False


class TrialLogger:
    """A trial's sink: buffers metrics and sends them with log_batch (one call per flush, not per value).

    Steps at or below the last step the run already holds are dropped, so a trial resumed from a checkpoint
    re-reporting a few steps logs none of them twice. Flushes every `flush_seconds` and whenever asked (the
    trainable flushes before each checkpoint: steps after it are re-reported on resume anyway).
    A batch the store does not take after a few retries is appended to a spool file (spool_dir()/<run id>.jsonl)
    and training goes on; `orchestrator/replay.py` delivers it later, skipping what the run already holds.
    Once a batch has failed every retry the store is taken to be down: later sends try it once, without waiting,
    and spool at once if it still refuses, so an outage costs training one round of retries, not one per flush.
    The first send it takes again ends that.
    """

    def __init__(self, uri: str, run_id: str, flush_seconds: float = 10.0):
        self.client, self.run_id, self.flush_seconds = MlflowClient(uri), run_id, flush_seconds
        self.spooled = 0  # metrics written to the spool file instead of the store
        history = self.client.get_metric_history(run_id, STEP_METRIC)
        self.last_step = max((m.step for m in history), default=0)
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._store_down = False
        self.client.update_run(run_id, status="RUNNING")
        if ERROR_TAG in self.client.get_run(run_id).data.tags:  # a retry clears the error of its last attempt
            self.client.delete_tag(run_id, ERROR_TAG)

    def __call__(self, step: int, values: dict):
        if step <= self.last_step:
            return
        now_ms = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now_ms, step) for k, v in values.items()]
        self.last_step = step
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def log_series(self, series: dict[str, list[tuple[int, float]]]):
        """Curves whose step is not an optimizer step (e.g. loss per inference loop count), in one batch."""
        now_ms = int(time.time() * 1000)
        batch = [Metric(key, float(v), now_ms, int(s)) for key, points in series.items() for s, v in points]
        if len(batch) > MAX_BATCH_METRICS:
            raise ValueError(f"{len(batch)} metrics: more than one log_batch call takes")
        if not self._deliver(lambda: self.client.log_batch(self.run_id, metrics=batch)):
            self._spool(batch)

    def flush(self):
        for i in range(0, len(self._buffer), MAX_BATCH_METRICS):
            chunk = self._buffer[i:i + MAX_BATCH_METRICS]
            failpoints.reached("mlflow_log")
            if not self._deliver(lambda: self.client.log_batch(self.run_id, metrics=chunk)):
                self._spool(chunk)
        self._buffer = []
        self._last_flush = time.monotonic()

    def _deliver(self, send) -> bool:
        """deliver(send), with a single attempt while the store is down (see the class)."""
        delivered = deliver(send, attempts=1 if self._store_down else 4)
        self._store_down = not delivered
        return delivered

    def _spool(self, items: list):
        """Append metrics (and status dicts) to this run's spool file, durably."""
        records = [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
                   if isinstance(m, Metric) else m for m in items]
        folder = spool_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{self.run_id}.jsonl", "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        self.spooled += sum("key" in r for r in records)

    def finish(self, status: str, error: str | None = None):
        self.flush()
        if not self._deliver(lambda: end_run(self.client, self.run_id, status, error)):
            self._spool([{"status": status, "error": error}])



# ------------------------------------------------------------------------------------------------- the MLflow UI
# What `mlflow ui` (3.x) shows first. Checked against MLflow 3.17 in headless Chromium by
# benchmarks/mlflow_ui_check.py (it also takes docs/mlflow_loss_vs_flops.png):
# - `workflowType=machine_learning` in a page's URL shows it in the "Model training" view, not the GenAI one (an
#   experiment then opens on its runs, not on an empty traces overview). Without it the Model training / GenAI
#   toggle decides (GenAI until the user picks the other, remembered per browser); 3.17 ignores the experiment's
#   mlflow.experimentKind tag;
# - an experiment tag mlflow.sharedViewState.<key> is a saved view (the runs page's Views menu), opened directly by
#   `viewStateShareKey=<key>` in the URL: its search filter, sort, chart sections and charts, and which runs are
#   plotted. Ours filters on the sweep's parent run (its trials are then listed flat: no collapsed parent run) and
#   shows all of them (MLflow plots the first 10 otherwise) in a chart of loss against the `flops` metric.
#   MLflow draws a metric x-axis on a linear scale only (a log scale is offered for the step axis alone);
# - mlflow.note.content is the description of a run or an experiment (markdown).
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves unless told otherwise
NOTE_TAG = "mlflow.note.content"
VIEW_TAG = "mlflow.sharedViewState."  # + the view's key
VIEW_PREFIX = "loopmdm-"  # our views' keys: VIEW_PREFIX + the parent run id
MAX_VIEWS = 20  # of ours per experiment, newest kept (MLflow's Views menu takes 40 in all)
SUMMARY_TAG = "loopmdm.summary"  # the parent run's description without the report's part (describe_sweep adds it)
HEADLINE = "headline/"  # parent-run metrics of the report's headline numbers
NOTE_LIMIT = 8000  # characters: MLflow's limit on a run tag's value
EXPERIMENT_NOTE_MARK = "<!-- loopmdm -->"  # an experiment description we wrote (and may rewrite); others are kept
REPORT_PAGE = "report/index.html"  # where orchestrator/report.py logs its page in the parent run's artifacts
SECTION_NAME = "Loss vs training FLOPs, all trials"  # our chart section in the view


def ui_address(tracking_uri: str) -> str:
    """Where the UI of this store is served: a tracking server serves its own; any other store is shown by
    `mlflow ui` (ui_command), at UI_ADDRESS."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return UI_ADDRESS


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves the UI of this store; None for a tracking server (it already does)."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def view_key(parent_run_id: str) -> str:
    return VIEW_PREFIX + parent_run_id


def sweep_path(experiment_id: str, parent_run_id: str) -> str:
    """The UI page (from '#') that opens on the sweep's view: every trial, loss against training FLOPs."""
    query = urllib.parse.urlencode({"workflowType": "machine_learning", "compareRunsMode": "CHART",
                                    "viewStateShareKey": view_key(parent_run_id)})
    return f"#/experiments/{experiment_id}/runs?{query}"


def sweep_url(tracking_uri: str, experiment_id: str, parent_run_id: str) -> str:
    return f"{ui_address(tracking_uri)}/{sweep_path(experiment_id, parent_run_id)}"


def run_path(experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page (from '#'), or one of its artifacts shown in the UI. workflowType: without it a run page opens
    in the GenAI view unless the user picked "Model training" in this browser before."""
    path = f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return path + "?workflowType=machine_learning"


def report_command(tracking_uri: str, experiment: str, parent_run_id: str) -> str:
    return (f"python orchestrator/report.py --tracking-uri {tracking_uri} --experiment {experiment} "
            f"--sweep-run {parent_run_id}")


def loss_vs_flops_view(parent_run_id: str, metric_keys=(metrics.VAL_LOSS,)) -> dict:
    """The runs page's state (MLflow 3.x: search facets and UI state in one object) that shows the sweep's trials,
    all of them plotted, one chart per metric against cumulative training FLOPs, losses on a log scale."""
    section = "loopmdm-loss-vs-flops"
    charts = [{"uuid": f"loopmdm-{key.replace('/', '-')}", "type": "LINE", "metricSectionId": section,
               "deleted": False, "isGenerated": False, "runsCountToCompare": 1000,
               "metricKey": key, "selectedMetricKeys": [key],
               "xAxisKey": "metric", "selectedXAxisMetricKey": metrics.FLOPS, "useGlobalXaxisKey": False,
               "xAxisScaleType": "linear", "scaleType": "log" if "loss" in key else "linear",
               "lineSmoothness": 0, "useGlobalLineSmoothing": False} for key in metric_keys]
    return {
        # search facets: this sweep's trials (a filter lists them flat, without their parent), sorted by name
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
        # UI state: every trial plotted; our section first, then what MLflow generates for the other metrics
        "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": True, "isAccordionReordered": True,
        "compareRunSections": [{"uuid": section, "name": SECTION_NAME,
                                "display": True, "isReordered": False, "columns": min(len(charts), 2),
                                "cardHeight": 480}],
        "compareRunCharts": charts,
    }


def _view_envelope(name: str, state: dict) -> str:
    """A saved view as MLflow 3.x stores it in an experiment tag: name and creation time in plain JSON, the state
    as a JSON string (MLflow writes it deflate-compressed and reads either)."""
    return json.dumps({"name": name, "createdAt": int(time.time() * 1000), "state": json.dumps(state)})


def _publish_view(client: MlflowClient, experiment, parent_run_id: str, name: str, metric_keys) -> str:
    """The sweep's saved view on its experiment (replaced if its state changed); only the MAX_VIEWS newest of ours
    are kept."""
    key, state = view_key(parent_run_id), loss_vs_flops_view(parent_run_id, metric_keys)
    tags = experiment.tags
    current = tags.get(VIEW_TAG + key)
    try:
        same = current is not None and json.loads(json.loads(current)["state"]) == state
    except (ValueError, KeyError, TypeError):
        same = False
    if not same:
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG + key, _view_envelope(name, state))
    ours = []
    for tag, value in tags.items():
        if tag.startswith(VIEW_TAG + VIEW_PREFIX) and tag != VIEW_TAG + key:
            try:
                ours.append((json.loads(value)["createdAt"], tag))
            except (ValueError, KeyError, TypeError):
                continue
    for _, tag in sorted(ours)[:max(0, len(ours) + 1 - MAX_VIEWS)]:
        client.delete_experiment_tag(experiment.experiment_id, tag)
    return key


def _experiment_note(experiment_id: str, parent_run_id: str, run_name: str) -> str:
    """The experiment's description; the UI shows its first line, so the link comes first."""
    return (f"{EXPERIMENT_NOTE_MARK}\n**Every trial's loss vs training FLOPs**: [{run_name}]"
            f"({sweep_path(experiment_id, parent_run_id)}) (the latest sweep; each has a view in *Views*)\n\n"
            f"Each sweep is one parent run, whose description says what it ran and, once `orchestrator/report.py` "
            f"has run, its speedups; each trial is a child run.")


def _ensure_ui(client: MlflowClient, experiment_id: str, parent_run, metric_keys, latest: bool) -> str:
    """The sweep's view and the experiment's description (pointing at this sweep if it is the `latest`, or if the
    experiment has none yet); returns the view's page (sweep_path)."""
    experiment = client.get_experiment(experiment_id)
    run_id, run_name = parent_run.info.run_id, parent_run.info.run_name
    note = experiment.tags.get(NOTE_TAG)
    if note is None or (latest and note.startswith(EXPERIMENT_NOTE_MARK)):  # a description the user wrote stays
        client.set_experiment_tag(experiment_id, NOTE_TAG, _experiment_note(experiment_id, run_id, run_name))
    _publish_view(client, experiment, run_id, f"{experiment.name} {run_name}: loss vs training FLOPs", metric_keys)
    return sweep_path(experiment_id, run_id)


def _fmt_list(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _lead(name: str, experiment_id: str, parent_run_id: str) -> str:
    return (f"**LoopMDM sweep `{name}`**: looped variants against their baselines at equal training FLOPs. "
            f"[Every trial's validation loss vs training FLOPs]({sweep_path(experiment_id, parent_run_id)}) (also "
            f"in the *Views* menu of the Runs tab).")


def sweep_summary(name: str, parent_run_id: str, experiment_id: str, labels, budgets, seeds, n_trials: int,
                  lr: str = "") -> str:
    """What the parent run's description says of the sweep (markdown): a first paragraph with the link to its view
    (the UI shows the first lines of a description), then a table of what it runs."""
    loops = [label for label in labels if label.startswith("loop")]
    baselines = [label for label in labels if not label.startswith("loop")]
    rows = [("looped variants", ", ".join(f"`{x}`" for x in loops) or "none"),
            ("baselines", ", ".join(f"`{x}`" for x in baselines) or "none"),
            ("training budgets (FLOPs)", _fmt_list(budgets)), ("seeds", _fmt_list(seeds)),
            ("trials", f"{n_trials} (one child run each)")] + ([("learning rate", lr)] if lr else [])
    return "\n".join([_lead(name, experiment_id, parent_run_id), "", "| the sweep | |", "|---|---|",
                      *[f"| {k} | {v} |" for k, v in rows]])


def _pending_report(tracking_uri: str, experiment: str, parent_run_id: str) -> str:
    return (f"**Speedups**: none yet; `{report_command(tracking_uri, experiment, parent_run_id)}` adds the table "
            f"here (and the full report to this run's artifacts).")


def publish_sweep_ui(client: MlflowClient, experiment_id: str, parent_run_id: str, summary: str,
                     metric_keys=(metrics.VAL_LOSS,), tracking_uri: str = "") -> str:
    """At the sweep's start: the experiment's description and the sweep's view (_ensure_ui); the parent run's
    summary (tag SUMMARY_TAG) and, unless it has one, its description: the summary and how to add the speedups.
    Returns the view's page (sweep_path). Idempotent (a resumed sweep keeps a description the report wrote)."""
    run = client.get_run(parent_run_id)
    path = _ensure_ui(client, experiment_id, run, metric_keys, latest=True)
    client.set_tag(parent_run_id, SUMMARY_TAG, summary[:NOTE_LIMIT])
    if NOTE_TAG not in run.data.tags:
        experiment = client.get_experiment(experiment_id).name
        lead, _, details = summary.partition("\n\n")
        client.set_tag(parent_run_id, NOTE_TAG,
                       _fit([lead, _pending_report(tracking_uri, experiment, parent_run_id)], after=(details,)))
    return path


def _fit(before: list[str], table: str = "", after: tuple[str, ...] = ()) -> str:
    """Parts joined by blank lines, within NOTE_LIMIT: a table that does not fit loses its last rows, and says so."""
    def join(t: str) -> str:
        return "\n\n".join(p for p in [*before, t, *after] if p)
    rows, text = table.splitlines(), join(table)
    cut = "| ... (cut to fit the description: the report's speedups.md has every row) |"
    while len(text) > NOTE_LIMIT and len(rows) > 2:
        rows.pop()
        text = join("\n".join(rows + [cut]))
    return text[:NOTE_LIMIT]


def headline_metric(key: str) -> str:
    """`headline/` + key made a valid MLflow metric name on every OS: each run of characters outside letters,
    digits, _ - . / and space becomes one _ ('loop[1,3)x2/b1e+12/speedup_vs_same_size' ->
    'headline/loop_1_3_x2/b1e12/speedup_vs_same_size'; an exponent's + is dropped)."""
    parts = [re.sub(r"[^\w.\- ]+", "_", part.replace("e+", "e")).strip("_ ") for part in key.split("/")]
    return HEADLINE + "/".join(p for p in parts if p not in ("", ".", ".."))


def summary_from_trials(client: MlflowClient, parent_run, trials: list | None = None) -> str:
    """sweep_summary for a sweep that began before run_sweep.py wrote one (tag SUMMARY_TAG): from its trial runs'
    tags (`trials`: its child runs, if already fetched)."""
    exp_id, run_id = parent_run.info.experiment_id, parent_run.info.run_id
    tags = [t.data.tags for t in (child_runs(client, exp_id, run_id) if trials is None else trials)]
    labels = sorted({t.get(LABEL_TAG, "?") for t in tags}, key=lambda x: (not x.startswith("loop"), x))
    budgets = sorted({float(t[BUDGET_TAG]) for t in tags if BUDGET_TAG in t})
    seeds = sorted({int(t[SEED_TAG]) for t in tags if SEED_TAG in t})
    name = parent_run.data.params.get("sweep.name") or client.get_experiment(exp_id).name
    return sweep_summary(name, run_id, exp_id, labels, budgets, seeds, len(tags))


def describe_sweep(client: MlflowClient, parent_run_id: str, markdown_table: str | None,
                   headline: dict[str, float | None], report_page: str = REPORT_PAGE) -> str:
    """After orchestrator/report.py: the parent run's description becomes the sweep's first paragraph (the link to
    its view), a link to the report's page among the run's artifacts, `markdown_table` (any markdown: the speedup
    table, a verdict line before it; None: the report found none), then what the sweep ran;
    each finite value of `headline` ({'loop[1,3)x2/b1e+12/speedup_vs_same_size': 1.9, ...}; None, NaN and inf are
    skipped: a censored speedup has no number) is logged as the parent-run metric headline_metric(key), step 0.
    Also makes sure the experiment's description and the sweep's view exist (sweeps run before they did). The
    description is rewritten on every call: an edit made in the UI is replaced. Returns the description."""
    run = client.get_run(parent_run_id)
    experiment_id = run.info.experiment_id
    trials = child_runs(client, experiment_id, parent_run_id)
    keys = {k for child in trials for k in child.data.metrics}
    metric_keys = [k for k in (metrics.VAL_LOSS, metrics.VAL_ANSWER_LOSS, metrics.VAL_ACCURACY) if k in keys]
    _ensure_ui(client, experiment_id, run, metric_keys or [metrics.VAL_LOSS], latest=False)
    summary = run.data.tags.get(SUMMARY_TAG) or summary_from_trials(client, run, trials)
    lead, _, details = summary.partition("\n\n")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    report = (f"**Speedups** (orchestrator/report.py, {stamp}; the full report with every table and figure: "
              f"[{report_page}]({run_path(experiment_id, parent_run_id, report_page)}) in this run's artifacts)")
    table = markdown_table or "No speedup could be computed (no finished loop config with a baseline)."
    now = int(time.time() * 1000)
    batch = [Metric(headline_metric(k), float(v), now, 0) for k, v in headline.items()
             if v is not None and math.isfinite(float(v))]
    logged = (f"{len(batch)} headline number{'s are' if len(batch) > 1 else ' is'} also this run's metrics "
              f"(`{HEADLINE}...`)." if batch else "")
    note = _fit([lead, report], table, (logged, details))
    client.set_tag(parent_run_id, NOTE_TAG, note)
    log_metrics(client, parent_run_id, batch)
    return note
