"""Read a finished (or running) sweep back from MLflow: its parent run, its trial runs, their full histories.

`search_runs` returns only each metric's last value, so the curves come from `get_metric_history`; `val/loss`
(and on task runs `val/answer_loss` and `val/accuracy`) is paired with `flops` logged at the same step.
"""

from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from loopmdm_core import loop_sampling, metrics

from . import tracking


@dataclass
class TrialRecord:
    run_id: str
    name: str
    status: str
    tags: dict
    params: dict
    curve: list[tuple[float, float]] = field(default_factory=list)  # (cumulative FLOPs, val/loss), by step
    error: str = ""
    answer_curve: list[tuple[float, float]] = field(default_factory=list)  # (FLOPs, val/answer_loss): task runs
    accuracy_curve: list[tuple[float, float]] = field(default_factory=list)  # (FLOPs, val/accuracy): task runs
    loop_scaling: dict[int, float] = field(default_factory=dict)  # n_loops at inference -> val loss
    attention: list[float] = field(default_factory=list)  # mask->mask share per layer application, in order
    task: dict[str, tuple[float, float]] = field(default_factory=dict)  # schedule -> (accuracy, FLOPs/problem)
    task_problems: int = 0  # problems behind each task accuracy

    @property
    def variant(self) -> str:
        return self.tags.get(tracking.VARIANT_TAG, "")

    @property
    def label(self) -> str:
        return self.tags.get(tracking.LABEL_TAG, self.name)

    @property
    def seed(self) -> int:
        return int(self.tags.get(tracking.SEED_TAG, 0))

    @property
    def budget(self) -> float:
        return float(self.tags.get(tracking.BUDGET_TAG, 0))

    def history(self, metric: str) -> list[tuple[float, float]]:
        """(FLOPs, value) pairs of val/loss, val/answer_loss or val/accuracy."""
        return {metrics.VAL_LOSS: self.curve, metrics.VAL_ANSWER_LOSS: self.answer_curve,
                metrics.VAL_ACCURACY: self.accuracy_curve}[metric]

    @property
    def lr_ladder(self) -> str:
        """'candidate' (an LR-ladder trial whose LR was not chosen), 'chosen', or '' (no ladder in the sweep)."""
        return self.tags.get(tracking.LADDER_TAG, "")

    @property
    def lr(self) -> float | None:
        return self.param("train.lr", float)

    @property
    def trained_one_pass(self) -> bool:
        """A model whose every training step ran one pass (a baseline): loop_sampling.trains_one_pass."""
        return loop_sampling.trains_one_pass(self.param("model.n_loops") or 1,
                                             self.params.get("train.loop_sampling", "fixed"))

    def param(self, key: str, cast=int):
        return cast(float(self.params[key])) if key in self.params else None


@dataclass
class SweepData:
    experiment: str
    parent_run_id: str
    parent_status: str
    tracking_uri: str
    trials: list[TrialRecord]

    @property
    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "FINISHED" and t.curve]

    @property
    def compared(self) -> list[TrialRecord]:
        """The finished trials every comparison uses: LR-ladder candidates (an LR not chosen for their variant)
        only inform the choice of learning rate."""
        return [t for t in self.finished if t.lr_ladder != "candidate"]

    @property
    def not_finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t not in self.finished]


def _latest_sweep(client: MlflowClient, experiment: str | None):
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(e.name for e in client.search_experiments(max_results=20)) or "none"
            raise tracking.TrackingError(f"no experiment {experiment!r} in the tracking store (experiments: {names})")
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp_ids, filter_string=f"tags.`{tracking.ROLE_TAG}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1) if exp_ids else []
    if not runs:
        raise tracking.TrackingError("no sweep in the tracking store" + (f" under {experiment!r}" if experiment else "")
                                     + "; run orchestrator/run_sweep.py first, or pass --tracking-uri")
    return runs[0]


def _task_results(values: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for key, accuracy in values.items():
        if key.startswith(metrics.TASK_ACCURACY):
            suffix = key[len(metrics.TASK_ACCURACY):]
            out[metrics.schedule_from_key(suffix)] = (accuracy, values.get(metrics.TASK_FLOPS + suffix, float("nan")))
    return out


def _with_flops(client: MlflowClient, run, metric: str, flops: dict) -> list[tuple[float, float]]:
    """(FLOPs, value) of `metric` at the steps where FLOPs were logged too, by step; [] if the run lacks it."""
    if metric not in run.data.metrics:
        return []
    values = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
    return [(flops[s], values[s]) for s in sorted(values) if s in flops]


def load(tracking_uri: str, experiment: str | None = None, sweep_run: str | None = None) -> SweepData:
    client = tracking.check_store(tracking_uri)
    if sweep_run:
        try:
            parent = client.get_run(sweep_run)
        except Exception:
            raise tracking.TrackingError(f"no run {sweep_run!r} in {tracking_uri}") from None
        if parent.data.tags.get(tracking.ROLE_TAG) != "sweep":
            raise tracking.TrackingError(f"run {sweep_run} is not a sweep's parent run (tag loopmdm.role=sweep)")
    else:
        parent = _latest_sweep(client, experiment)
    exp_name = client.get_experiment(parent.info.experiment_id).name
    trials = []
    for run in tracking.child_runs(client, parent.info.experiment_id, parent.info.run_id):
        record = TrialRecord(run.info.run_id, run.info.run_name, run.info.status, dict(run.data.tags),
                             dict(run.data.params), error=run.data.tags.get(tracking.ERROR_TAG, ""))
        if metrics.VAL_LOSS in run.data.metrics:
            flops = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metrics.FLOPS)}
            record.curve = _with_flops(client, run, metrics.VAL_LOSS, flops)
            record.answer_curve = _with_flops(client, run, metrics.VAL_ANSWER_LOSS, flops)
            record.accuracy_curve = _with_flops(client, run, metrics.VAL_ACCURACY, flops)
        if metrics.INFER_VAL_LOSS in run.data.metrics:
            record.loop_scaling = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                                       metrics.INFER_VAL_LOSS)}
        if metrics.MASK_TO_MASK in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, metrics.MASK_TO_MASK)
            record.attention = [m.value for m in sorted(history, key=lambda m: m.step)]
        record.task = _task_results(run.data.metrics)
        record.task_problems = int(run.data.metrics.get(metrics.TASK_PROBLEMS, 0))
        trials.append(record)
    return SweepData(exp_name, parent.info.run_id, parent.info.status, tracking_uri, trials)
