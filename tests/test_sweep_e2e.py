"""Sweeps end to end through real Ray Tune and real MLflow on SQLite (no mocks). Kill-and-resume is
test_faults_e2e.py's: a sweep killed at several points, one after a trial finished, resumes to this module's
assert_same_sweep."""

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_sweep(tmp_path, tiny_corpus, cache_dir, name, **extra) -> Path:
    data = {
        "name": name,
        "base": {"model": {"n_layers": 3, "d_model": 32, "n_heads": 2},
                 "data": {"corpus": tiny_corpus, "bpe_vocab_size": 320, "seq_len": 32, "cache_dir": cache_dir,
                          "val_fraction": 0.2},
                 "train": {"batch_size": 8, "log_every": 2, "checkpoint_every": 4},
                 "eval": {"fractions": [0.5, 1.0], "n_batches": 2, "batch_size": 4, "n_t": 2}},
        "loops": {"loop_start": [1], "loop_end": [2], "n_loops": [2]},
        "baselines": ["same_size", "depth_matched"],
        "budgets": [3e9],
        "seeds": [0],
        "resources": {"cpu": 1},
        "max_concurrent": 1,
        "max_failures": 0,
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_sweep(sweep: Path, cwd: Path, *args, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), str(sweep), "-q", *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: Ray's processes die with it


def finish(proc: subprocess.Popen, timeout=420) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hung sweep: stop it and its Ray cluster, or both outlive the test
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the sweep did not finish in {timeout} s:\n{out[-3000:]}") from None
    assert proc.returncode in (0, 1), out
    return out


def runs_of(cwd: Path, name: str):
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("loopmdm.role") == "sweep"]
    trials = {r.data.tags["loopmdm.trial_key"]: r for r in runs if r.data.tags.get("loopmdm.role") == "trial"}
    return client, parents, trials


def histories(client, run) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics if not key.startswith("perf/")}


def test_sweep_logs_runs_tags_and_metrics(tmp_path, tiny_corpus, cache_dir):
    sweep = write_sweep(tmp_path, tiny_corpus, cache_dir, "e2e", infer={
        "max_loops": 3, "attention_t": 0.5, "task": {"problems": 3, "test": "arithmetic", "answer_tokens": 3,
                                                      "steps": 2, "schedules": ["fixed:1", "fixed:2", "ramp:2:1"]}})
    out = finish(start_sweep(sweep, tmp_path))
    assert "3 finished, 0 failed" in out, out
    client, parents, trials = runs_of(tmp_path, "e2e")
    assert len(parents) == 1 and len(trials) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    variants = sorted(r.data.tags["loopmdm.variant"] for r in trials.values())
    assert variants == ["depth_matched", "loop", "same_size"]
    # one slot: the trials ran in trials.longest_first's order, same-size (the most steps) first
    started = sorted(trials.values(), key=lambda r: r.info.start_time)
    assert started[0].data.tags["loopmdm.variant"] == "same_size"
    for run in trials.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["loopmdm.group"] == "b3e+09-s0" and run.data.tags["loopmdm.seed"] == "0"
        assert run.data.params["model.n_layers"] in ("3", "4") and "train.lr" in run.data.params
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.yaml", "inference.json"]
        h = histories(client, run)
        steps = int(run.data.params["derived.steps"])
        flops_steps = [s for s, _ in h["flops"]]
        assert flops_steps == sorted(set(flops_steps)) and flops_steps[-1] == steps  # no step twice
        assert {s for s, _ in h["val/loss"]} <= set(flops_steps)  # flops logged beside every loss
        assert {s for s, _ in h["train/loss"]} <= set(flops_steps)
        assert [s for s, _ in h["val/loss"]] == [round(steps / 2), steps]
        assert len(h["attn/mask_to_mask"]) == int(run.data.params["derived.applied_layers"])
        # the loop: loss per inference loop count, once each, and every schedule asked for; a baseline (trained
        # with one pass) at its one pass only: more would loop a whole stack it never learned to loop
        looped = run.data.tags["loopmdm.variant"] == "loop"
        schedules = ("fixed_1", "ramp_2_1", "fixed_2") if looped else ("fixed_1",)
        assert [s for s, _ in h["infer/val_loss"]] == ([1, 2, 3] if looped else [1])
        assert sorted(k for k in h if k.startswith("task/accuracy/")) == sorted(f"task/accuracy/{s}" for s in schedules)
        for s in schedules:
            assert len(h[f"task/accuracy/{s}"]) == 1 and h[f"task/accuracy/{s}"][0][1] in (0, 1 / 3, 2 / 3, 1)
        flops = [h[f"task/forward_flops_per_problem/{s}"][0][1] for s in schedules]
        assert 0 < flops[0] and flops == sorted(flops)
    # Checkpoints are the trainer's, one folder per trial key ending at its final step; Tune is given none (its
    # snapshot of them can name one it already deleted: a killed sweep could then not resume).
    experiment = tmp_path / "ray_results" / "e2e"
    for key, run in trials.items():
        final = f"step_{int(run.data.params['derived.steps']):09d}"
        assert final in [p.name for p in (experiment / "checkpoints" / key).iterdir()]
    assert sorted(p.name for p in (experiment / "checkpoints").iterdir()) == sorted(trials)
    assert not list(experiment.glob("*/checkpoint_*"))
    check_report(tmp_path)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium (.ci/run) to check the HTML report renders")
    pytest.skip("chromium is not installed")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def check_report(cwd: Path):
    """report.py on the sweep just run: its table, files, artifacts, and the HTML as Chromium renders it."""
    out = subprocess.run([sys.executable, str(ROOT / "orchestrator" / "report.py"), "--out", str(cwd / "report")],
                         capture_output=True, text=True, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    speedups = out.stdout.split("\n\n")[1]  # provenance, then the speedup table, then the other sections
    table = [line for line in speedups.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0][2:] for row in table[1:]] == ["loop[1,2)x2", "same_size(3L)", "depth_matched(4L)"]
    assert "runs used: 3 finished trials of 3" in out.stdout
    page = cwd / "report" / "index.html"
    for name in ("speedups.csv", "speedups.json", "loss_vs_flops.png", "speedup_bars.png", "loss_vs_loops.png"):
        assert (cwd / "report" / name).stat().st_size > 200
    browser = chromium()
    profile = cwd / "chromium-profile"
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    # loss vs FLOPs, speedup bars, loss vs loops + inference loops, attention, task; no accuracy_vs_flops: the sweep
    # sets no data.task, so its trials log no val/accuracy
    assert "loop[1,2)x2" in dom and dom.count("data:image/png;base64,") == 6
    assert "Validation loss vs inference loops" in dom and "Attention among masked positions" in dom
    assert "Reasoning-task accuracy vs inference compute" in dom
    assert "Is it above noise?" in dom and "one shared learning rate 0.001 for every variant (not tuned)" in dom
    assert "Held-out accuracy" not in dom and "accuracy vs flops" not in dom
    # speedups: header + 3 variants; noise: header + 1 loop config x 2 baselines; learning rates: no table (no LR
    # ladder: one line); loop scaling and attention: header + 3 variants each; task: header + 3 schedules of the
    # loop + fixed:1 of each baseline
    assert dom.count("<tr>") == (1 + 3) + (1 + 1 * 2) + (1 + 3) + (1 + 3) + (1 + 3 + 2)
    shot = cwd / "shot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    pixels = plt.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and (pixels.mean(axis=2) < 0.9).mean() > 0.02  # text, table and plots, not blank


def store_created(db: Path, experiment: str) -> bool:
    """Whether the driver has created its MLflow store: tables migrated, the sweep's experiment in it. Read
    without MLflow: an MlflowClient opened on a database still being created migrates it as well, and the two
    migrations race (the driver then dies in alembic: 'Online migration expected to match one row')."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute("SELECT 1 FROM experiments WHERE name = ?", (experiment,)).fetchone() is not None
    except sqlite3.Error:  # no file yet, no table yet, or locked by the driver's write
        return False


def sweep_histories(folder: Path, name: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every trial's metric histories in the sweep's MLflow store under `folder`, by trial key."""
    client, _, trials = runs_of(folder, name)
    return {key: histories(client, run) for key, run in trials.items()}


def trainer_histories(sweep: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """What each trial of `sweep` logs when the trainer runs it uninterrupted, here in this process: no Ray, no
    MLflow, no checkpoint. The reference a sweep that was killed, resumed or cut off from its store must end
    equal to, for a few seconds of training instead of a whole reference sweep."""
    from conftest import Recorder
    from loopmdm_core.train import train
    from orchestrator import spec, trials
    out = {}
    for trial in trials.expand(spec.load(sweep)):
        recorder = Recorder()
        train(trial.plan, sink=recorder)
        series: dict[str, list[tuple[int, float]]] = {}
        for step, values in sorted(recorder.rows.items()):
            for key, value in values.items():
                series.setdefault(key, []).append((step, value))
        out[trial.key] = series
    return out


def assert_same_histories(got: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]],
                          key: str):
    """Trial `key` logged the expected metrics, each at the expected steps (none twice), with the expected values."""
    assert got.keys() == expected.keys(), key
    for metric, points in expected.items():
        assert [s for s, _ in got[metric]] == [s for s, _ in points], (key, metric)
        assert [v for _, v in got[metric]] == pytest.approx([v for _, v in points], rel=1e-5), (key, metric)


def assert_same_sweep(expected: dict[str, dict[str, list[tuple[int, float]]]], got_dir: Path, name: str):
    """One FINISHED parent, the expected trials with one FINISHED run each, each with the expected histories
    (sweep_histories or trainer_histories of an uninterrupted run)."""
    client, parents, got = runs_of(got_dir, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert got.keys() == expected.keys()  # the same trials, one run each
    for key, run in got.items():
        assert run.info.status == "FINISHED"
        assert_same_histories(histories(client, run), expected[key], key)


def test_failing_trial_is_failed_with_its_error_and_others_finish(tmp_path, tiny_corpus, cache_dir):
    # Optuna samples lr from two values, one of which makes the loss infinite at once: that trial fails with
    # TrainingDiverged, the others finish, and the best config lands on the parent run.
    # Ray workers are reused (resources.reuse_workers): the failure does not leak into the next trial's process.
    sweep = write_sweep(tmp_path, tiny_corpus, cache_dir, "search", baselines=[],
                        resources={"cpu": 1, "reuse_workers": True},
                        search={"n_trials": 4, "params": {"train.lr": {"distribution": "choice",
                                                                       "choices": [3e-3, 1e9]}}})
    out = finish(start_sweep(sweep, tmp_path))
    client, parents, trials = runs_of(tmp_path, "search")
    statuses = sorted(r.info.status for r in trials.values())
    assert "FAILED" in statuses and "FINISHED" in statuses, (statuses, out)
    for run in trials.values():
        if run.info.status == "FAILED":
            assert "TrainingDiverged" in run.data.tags["loopmdm.error"]
            assert run.data.params["train.lr"] == "1000000000.0"
    parent = parents[0]
    assert parent.info.status == "FAILED" and "failed" in parent.data.tags["loopmdm.error"]
    best = [v for k, v in parent.data.tags.items() if k.startswith("loopmdm.best.")]
    assert len(best) == 1 and '"train.lr": 0.003' in best[0]


def test_data_parallel_trial_matches_one_process(tmp_path, tiny_corpus, cache_dir):
    """resources.workers: 2 trains the trial on 2 gloo ranks inside the Ray trial: one MLflow run, the whole
    batch's FLOPs, and the same final validation loss as one process training the same config."""
    from loopmdm_core import load_run_config, train
    sweep = write_sweep(tmp_path, tiny_corpus, cache_dir, "ddp", baselines=[], resources={"cpu": 2, "workers": 2},
                        loops=[{"loop_start": 1, "loop_end": 2, "n_loops": 2}])
    out = finish(start_sweep(sweep, tmp_path))
    assert "1 finished, 0 failed" in out, out
    client, _, trials = runs_of(tmp_path, "ddp")
    [run] = trials.values()
    h = histories(client, run)
    steps = int(run.data.params["derived.steps"])
    assert h["flops"][-1] == (steps, steps * float(run.data.params["derived.flops_per_token"]) * 8 * 32)
    client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    alone = train(load_run_config(config))
    assert h["val/loss"][-1][1] == pytest.approx(alone.val_loss, rel=1e-4)
