"""MLflow side of a sweep: the store, one parent run per sweep, one child run per trial, batched metrics.

Runs are found again by tags, never by memory: the parent by `loopmdm.sweep_key` (the sweep's name and
storage folder), a trial by `loopmdm.trial_key` under that parent. So a resumed sweep reopens the same runs
and a trial logs only steps after the last one its run holds: nothing is duplicated.
"""

import json
import os
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
ERROR_TAG = "loopmdm.error"
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
    elif "://" not in uri:  # a bare path: MLflow treats it as a file store
        uri = Path(uri).resolve().as_uri()
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
        raise TrackingError(f"tracking URI {uri}: MLflow refuses file stores unless MLFLOW_ALLOW_FILE_STORE=true; "
                            f"prefer the default sqlite:///mlflow.db")
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as e:  # MLflow raises many types for a broken store
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
        found = _find(client, exp_id, f"tags.`loopmdm.sweep_key` = '{sweep_key}' and tags.`loopmdm.role` = 'sweep'")
        if found:
            client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
    run = client.create_run(exp_id, tags={"loopmdm.role": "sweep", "loopmdm.sweep_key": sweep_key,
                                          "mlflow.runName": f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"})
    _log_params(client, run.info.run_id, params)
    client.log_text(run.info.run_id, sweep_yaml, "sweep.yaml")
    return run.info.run_id


def open_trial_run(client: MlflowClient, exp_id: str, parent_id: str, key: str, name: str, tags: dict,
                   config: dict, derived: dict) -> str:
    """The trial's child run, found by its trial_key under the parent, or created (SCHEDULED) with params
    (the flattened config and what it implies) and the resolved config as an artifact."""
    found = _find(client, exp_id, f"tags.`loopmdm.trial_key` = '{key}' and tags.`mlflow.parentRunId` = '{parent_id}'")
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


def run_status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def spool_dir() -> Path:
    """Where metrics that could not be delivered wait for `orchestrator/replay.py`: $LOOPMDM_SPOOL, else
    ~/.cache/loopmdm/mlflow_spool (on the machine that ran the trial)."""
    return Path(os.environ.get("LOOPMDM_SPOOL") or Path.home() / ".cache" / "loopmdm" / "mlflow_spool").expanduser()


def deliver(send, attempts: int = 4, first_wait: float = 0.5) -> bool:
    """Call send() until it succeeds, `attempts` times at most with doubling waits (a SQLite store busy with
    other writers, a server restarting). False when every attempt failed."""
    wait = first_wait
    for attempt in range(attempts):
        try:
            send()
            return True
        except Exception:  # MLflow raises MlflowException, requests and SQLAlchemy errors: all mean "not now"
            if attempt == attempts - 1:
                return False
            time.sleep(wait)
            wait *= 2
    return False


class TrialLogger:
    """A trial's sink: buffers metrics and sends them with log_batch (one call per flush, not per value).

    Steps at or below the last step the run already holds are dropped, so a trial resumed from a checkpoint
    re-reporting a few steps logs none of them twice. Flushes every `flush_seconds` and whenever asked (the
    trainable flushes before each checkpoint: steps after it are re-reported on resume anyway).
    A batch the store does not take after a few retries is appended to a spool file (spool_dir()/<run id>.jsonl)
    and training goes on; `orchestrator/replay.py` delivers it later, skipping what the run already holds.
    """

    def __init__(self, uri: str, run_id: str, flush_seconds: float = 10.0):
        self.client, self.run_id, self.flush_seconds = MlflowClient(uri), run_id, flush_seconds
        self.spooled = 0  # metrics written to the spool file instead of the store
        history = self.client.get_metric_history(run_id, STEP_METRIC)
        self.last_step = max((m.step for m in history), default=0)
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
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
        if len(batch) > 1000:
            raise ValueError(f"{len(batch)} metrics: more than one log_batch call takes")
        if not deliver(lambda: self.client.log_batch(self.run_id, metrics=batch)):
            self._spool(batch)

    def flush(self):
        for i in range(0, len(self._buffer), 1000):  # log_batch takes at most 1000 metrics per call
            chunk = self._buffer[i:i + 1000]
            failpoints.reached("mlflow_log")
            if not deliver(lambda: self.client.log_batch(self.run_id, metrics=chunk)):
                self._spool(chunk)
        self._buffer = []
        self._last_flush = time.monotonic()

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
        if not deliver(lambda: end_run(self.client, self.run_id, status, error)):
            self._spool([{"status": status, "error": error}])

