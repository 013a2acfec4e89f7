"""The MLflow UI's first screen of a sweep: the URL run_sweep.py prints, the saved view it opens, the parent run's
description before and after the report, the headline metrics; and (slow) the view as headless Chromium renders it
from a real `mlflow server`."""

import json
import math
import os
import shutil
import time
import urllib.parse

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator import run_sweep, sweep, tracking
from orchestrator import spec as specs
from orchestrator import trials as trials_of
from synthetic_sweep import make_sweep


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating one takes seconds); each test has its own experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    tracking.check_store(uri)
    return uri


def start_sweep_run(store: str, spec: specs.SweepSpec) -> tuple[MlflowClient, str, str]:
    """What sweep.run does before Ray starts: the experiment, the parent run, its UI (no trial runs)."""
    client = MlflowClient(store)
    exp_id = tracking.experiment_id(client, spec.name)
    trials = trials_of.expand(spec)
    parent = tracking.open_parent_run(client, exp_id, "key", {"sweep.name": spec.name}, spec.source, fresh=True)
    sweep._publish_ui(client, spec, trials, store, exp_id, parent)
    return client, exp_id, parent


def tiny_spec(tmp_path, tiny_corpus, cache_dir, name="ui", **extra) -> specs.SweepSpec:
    data = {"name": name, "base": {"model": {"n_layers": 3, "d_model": 32, "n_heads": 2},
                                   "data": {"corpus": tiny_corpus, "bpe_vocab_size": 320, "seq_len": 32,
                                            "cache_dir": cache_dir, "val_fraction": 0.2},
                                   "train": {"batch_size": 8}},
            "loops": {"loop_start": [1], "loop_end": [2], "n_loops": [2, 3]}, "budgets": [3e9, 6e9],
            "seeds": [0, 1], **extra}
    path = tmp_path / "ui.yaml"
    path.write_text(yaml.safe_dump(data))
    return specs.load(str(path))


def test_sweep_start_prints_the_url_of_its_view_and_describes_itself(tmp_path, store, tiny_corpus, cache_dir):
    spec = tiny_spec(tmp_path, tiny_corpus, cache_dir)
    client, exp_id, parent = start_sweep_run(store, spec)

    # the closing output: the command serving the store, the URL of the view, the report command
    outcome = sweep.SweepOutcome(parent, store, tmp_path, experiment_id=exp_id)
    text = run_sweep.closing_text(spec.name, outcome)
    assert f"mlflow ui --backend-store-uri {store}" in text
    url = next(word for word in text.split() if word.startswith("http://"))
    assert url.startswith(f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?")
    query = urllib.parse.parse_qs(url.split("?", 1)[1])
    assert query == {"workflowType": ["machine_learning"], "compareRunsMode": ["CHART"],
                     "viewStateShareKey": [tracking.view_key(parent)]}
    assert f"python orchestrator/report.py --tracking-uri {store} --experiment ui --sweep-run {parent}" in text
    # through a tracking server the server is the UI: no command to start one
    served = run_sweep.closing_text("ui", sweep.SweepOutcome(parent, "http://host:5001/", tmp_path, experiment_id="7"))
    assert "mlflow ui" not in served and f"http://host:5001/#/experiments/7/runs?" in served

    # the view the key opens: this sweep's trials (flat: a filter on their parent), all plotted, loss vs flops
    tags = client.get_experiment(exp_id).tags
    envelope = json.loads(tags[tracking.VIEW_TAG + tracking.view_key(parent)])
    assert envelope["name"].startswith("ui sweep-") and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent}'"
    assert state["runsHiddenMode"] == "SHOW_ALL"
    [chart] = state["compareRunCharts"]  # no task: validation loss only
    assert (chart["type"], chart["metricKey"], chart["xAxisKey"], chart["selectedXAxisMetricKey"]) == \
        ("LINE", "val/loss", "metric", "flops")
    assert chart["metricSectionId"] == state["compareRunSections"][0]["uuid"]
    assert tracking.sweep_path(exp_id, parent) in tags[tracking.NOTE_TAG]  # the experiment's description links it

    # the parent run's description: what the sweep runs, the link to the view, how to add the speedups
    note = client.get_run(parent).data.tags[tracking.NOTE_TAG]
    trials = len(trials_of.expand(spec))
    for text in ("LoopMDM sweep `ui`", "`loop[1,2)x2`, `loop[1,2)x3`", "`same_size(3L)`", "`depth_matched(4L)`",
                 "`depth_matched(5L)`", "| training budgets (FLOPs) | 3e+09, 6e+09 |", "| seeds | 0, 1 |",
                 f"| trials | {trials} (one child run each) |",
                 tracking.sweep_path(exp_id, parent),
                 f"`python orchestrator/report.py --tracking-uri {store} --experiment ui --sweep-run {parent}` adds"):
        assert text in note, text
    assert note.index(tracking.sweep_path(exp_id, parent)) < 300  # in the first lines, which the UI shows

    # resumed: the same view, once; a description the report wrote stays
    client.set_tag(parent, tracking.NOTE_TAG, "the report's")
    sweep._publish_ui(client, spec, trials_of.expand(spec), store, exp_id, parent)
    assert client.get_run(parent).data.tags[tracking.NOTE_TAG] == "the report's"
    assert sum(k.startswith(tracking.VIEW_TAG) for k in client.get_experiment(exp_id).tags) == 1


def test_task_sweeps_chart_answer_loss_and_accuracy_too(tmp_path, store, tiny_corpus, cache_dir):
    spec = tiny_spec(tmp_path, tiny_corpus, cache_dir, name="ui-task", base={
        "model": {"n_layers": 3, "d_model": 32, "n_heads": 2},
        "data": {"corpus": "none", "task": "arithmetic:2", "bpe_vocab_size": 320, "seq_len": 32,
                 "cache_dir": cache_dir, "val_fraction": 0.2}, "train": {"batch_size": 8}})
    client, exp_id, parent = start_sweep_run(store, spec)
    state = json.loads(json.loads(client.get_experiment(exp_id).tags[tracking.VIEW_TAG +
                                                                   tracking.view_key(parent)])["state"])
    assert [c["metricKey"] for c in state["compareRunCharts"]] == ["val/loss", "val/answer_loss", "val/accuracy"]
    assert [c["scaleType"] for c in state["compareRunCharts"]] == ["log", "log", "linear"]


def test_only_the_newest_views_are_kept(store):
    client = MlflowClient(store)
    exp_id = client.create_experiment("many")
    parents = [client.create_run(exp_id).info.run_id for _ in range(tracking.MAX_VIEWS + 2)]
    for i, parent in enumerate(parents):
        tracking.publish_sweep_ui(client, exp_id, parent, f"summary {i}")
        time.sleep(0.002)  # views are ordered by their creation time, in ms
    views = [k for k in client.get_experiment(exp_id).tags if k.startswith(tracking.VIEW_TAG)]
    assert sorted(views) == sorted(tracking.VIEW_TAG + tracking.view_key(p) for p in parents[-tracking.MAX_VIEWS:])
    # the experiment's description points at the latest sweep; one a user wrote is kept
    assert tracking.view_key(parents[-1]) in client.get_experiment(exp_id).tags[tracking.NOTE_TAG]
    client.set_experiment_tag(exp_id, tracking.NOTE_TAG, "mine")
    tracking.publish_sweep_ui(client, exp_id, parents[0], "again")
    assert client.get_experiment(exp_id).tags[tracking.NOTE_TAG] == "mine"


def test_describe_sweep_sets_the_description_and_headline_metrics(store):
    client = MlflowClient(store)
    parent = make_sweep(store, "described", budgets=(1e12,), seeds=(0, 1), loops=((2, 3.0),), task=True)
    table = "| variant | speedup vs same-size |\n|---|---|\n| loop[1,3)x2 | 3.00x [3.00, 3.00]; reached 2/2 seeds |"
    headline = {"loop[1,3)x2/b1e+12/speedup_vs_same_size": 3.0, "loop[1,3)x2/b1e+12/speedup_vs_depth_matched": 2.0,
                "loop[1,3)x3/b1e+12/speedup_vs_same_size": None, "nan": math.nan, "inf": math.inf}
    note = tracking.describe_sweep(client, parent, table, headline)
    run = client.get_run(parent)
    exp_id = run.info.experiment_id
    assert run.data.tags[tracking.NOTE_TAG] == note
    assert table in note
    # a sweep from before run_sweep.py wrote a summary: it comes from the trials' tags
    assert "LoopMDM sweep `described`" in note and "| seeds | 0, 1 |" in note and "| trials | 6 (one child" in note
    assert f"(#/experiments/{exp_id}/runs/{parent}/artifacts/report/index.html?workflowType=machine_learning)" in note
    assert tracking.sweep_path(exp_id, parent) in note
    # the numbers, nan-free; names MLflow takes on every OS
    assert run.data.metrics == {"headline/loop_1_3_x2/b1e12/speedup_vs_same_size": 3.0,
                                "headline/loop_1_3_x2/b1e12/speedup_vs_depth_matched": 2.0}
    # the view it makes for a sweep that had none charts what the trials logged (a task sweep here)
    state = json.loads(json.loads(client.get_experiment(exp_id).tags[tracking.VIEW_TAG +
                                                                   tracking.view_key(parent)])["state"])
    assert [c["metricKey"] for c in state["compareRunCharts"]] == ["val/loss", "val/answer_loss", "val/accuracy"]
    # a table too long for a run tag loses its last rows, and says so
    long = "\n".join([table] + [f"| loop[1,3)x{k} | {k}.00x |" for k in range(2000)])
    note = tracking.describe_sweep(client, parent, long, {})
    assert len(note) <= tracking.NOTE_LIMIT and "cut to fit the description" in note
    assert client.get_run(parent).data.tags[tracking.NOTE_TAG] == note
    # no table: said so
    assert "No speedup could be computed" in tracking.describe_sweep(client, parent, None, {})


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium (.ci/run) to check the MLflow UI view renders")
    pytest.skip("chromium is not installed")


@pytest.mark.slow
def test_view_renders_every_trial_in_chromium(tmp_path, capsys):
    """benchmarks/mlflow_ui_check.py on a synthetic 20-trial sweep: a real `mlflow server`, the URL run_sweep.py
    prints, headless Chromium: every trial listed and drawn in the loss-vs-FLOPs chart, the parent run's page
    showing its description with the link to the view."""
    chromium()
    from benchmarks import mlflow_ui_check
    shot = tmp_path / "shot.png"
    status = mlflow_ui_check.main(["--synthetic", "--out", str(shot), "--timeout", "120", "--workdir",
                                   str(tmp_path / "work")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "20 runs listed of 20 trials" in out and "the first drawing 20 curve(s)" in out
    assert shot.stat().st_size > 20000


def test_report_describes_the_parent_run(tmp_path, store):
    """report.py (logging on) writes the speedup table into the parent run's description and the median
    speedups as headline metrics: 3.0x vs same-size and 2.0x vs depth-matched, the synthetic store's known
    factors."""
    from orchestrator import report
    parent = make_sweep(store, "reported", loops=((2, 3.0),), budgets=(1e12,))
    assert report.main(["--tracking-uri", store, "--experiment", "reported", "--out", str(tmp_path / "r")]) == 0
    run = MlflowClient(store).get_run(parent)
    note = run.data.tags["mlflow.note.content"]
    assert "| loop[1,3)x2 |" in note and "report/index.html" in note
    assert run.data.metrics["headline/loop_1_3_x2/b1e12/speedup_vs_same_size"] == pytest.approx(3.0, rel=1e-6)
    assert run.data.metrics["headline/loop_1_3_x2/b1e12/speedup_vs_depth_matched"] == pytest.approx(2.0, rel=1e-6)
