"""report.py on stores with known answers (synthetic sweeps in real MLflow/SQLite), and its error paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.synthetic_sweep import make_sweep
from conftest import start_mlflow_server
from orchestrator import report, tracking

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.check_store(uri)
    return uri


def rows_by_label(out: Path) -> dict:
    data = json.loads((out / "speedups.json").read_text())
    return {(r["label"], r["budget_flops"]): r for r in data["rows"]}, data


def test_known_speedups_are_reported(store, tmp_path, capsys):
    parent = make_sweep(store, "known", loops=((2, 3.0), (3, 0.5)), depth_factor=1.5, extra_failed=1)
    out = tmp_path / "report"
    assert report.main(["--tracking-uri", store, "--experiment", "known", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows, data = rows_by_label(out)
    fast = rows[("loop[1,3)x2", 1e12)]
    assert fast["speedup_vs_same_size"]["mean"] == pytest.approx(3.0, rel=1e-6)
    assert fast["speedup_vs_same_size"]["seeds"] == 2 and fast["speedup_vs_same_size"]["not_reached"] == 0
    assert fast["speedup_vs_depth_matched"]["mean"] == pytest.approx(2.0, rel=1e-6)  # 3.0 / 1.5
    slow = rows[("loop[1,3)x3", 3e12)]
    assert slow["speedup_vs_same_size"]["mean"] is None and slow["speedup_vs_same_size"]["not_reached"] == 2
    assert "| loop[1,3)x2 | [1,3) | 2 |" in printed and "3.00x [3.00, 3.00]" in printed
    assert "not reached (2/2 seeds)" in printed
    # Honesty: the sweep, the runs used and the one left out with its reason.
    assert f"parent run {parent}" in printed and "runs used: 20 finished trials of 21" in printed
    assert "left out: loop[1,3)x9-b1e+12-s99 (FAILED: RuntimeError: synthetic failure)" in printed
    assert "validation negative ELBO" in printed
    # Two budgets: the iso-FLOPs (finished schedules) speedup is reported too.
    iso = {r["label"]: r for r in data["iso_flops"]}
    assert iso["loop[1,3)x2"]["vs_same_size"]["mean"] == pytest.approx(3.0, rel=1e-6)
    # 20 eval points of one power law per curve: the fitted trends extrapolate the known factors, labelled
    trend = {e["label"]: e for e in data["extrapolations"]}
    assert trend["loop[1,3)x2"]["speedup_at_10x"] == pytest.approx(3.0, rel=1e-3)
    assert trend["loop[1,3)x3"]["speedup_at_100x"] == pytest.approx(0.5, rel=1e-3)
    assert "EXTRAPOLATION (power-law fit, not measured): loop[1,3)x2 vs same_size(4L): 3.00x at 10x" in printed
    for name in ("speedups.md", "speedups.csv", "speedups.json", "loss_vs_flops.png", "speedup_bars.png",
                 "loss_vs_loops.png", "index.html"):
        assert (out / name).stat().st_size > 500, name
    logged = [a.path for a in MlflowClient(store).list_artifacts(parent, "report")]
    assert "report/index.html" in logged and "report/speedups.csv" in logged


def test_extrapolation_averages_the_seeds():
    """Two seeds of a loop config whose curves are the baseline's shifted by 2x and 8x: the fit goes through
    their mean, itself a power law shifted by ((2^-a + 8^-a) / 2)^(-1/a) = 3.77x (a = 0.25), not by either
    seed's factor."""
    import numpy as np

    from benchmarks.synthetic_sweep import power
    from orchestrator.comparison import _extrapolations
    from orchestrator.sweep_data import TrialRecord
    flops = np.linspace(1e11, 2e12, 20)

    def trial(variant, seed, shift):
        tags = {"loopmdm.variant": variant, "loopmdm.label": variant, "loopmdm.seed": str(seed),
                "loopmdm.budget_flops": "2e12"}
        return TrialRecord(f"{variant}{seed}", variant, "FINISHED", tags, {},
                           list(zip(flops.tolist(), power(flops * shift).tolist())))
    trials = [trial("same_size", 0, 1.0), trial("same_size", 1, 1.0), trial("loop", 0, 2.0), trial("loop", 1, 8.0)]
    groups = {(2e12, s): [t for t in trials if t.seed == s] for s in (0, 1)}
    (got,) = _extrapolations(trials, groups)
    want = ((2.0 ** -0.25 + 8.0 ** -0.25) / 2) ** -4
    assert got["speedup_at_10x"] == pytest.approx(want, rel=1e-3) and abs(want - 3.77) < 0.01


def test_single_seed_and_single_budget(store, tmp_path):
    make_sweep(store, "one", budgets=(2e12,), seeds=(0,), loops=((2, 2.0),))
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--out", str(out), "--no-log"]) == 0
    rows, data = rows_by_label(out)
    s = rows[("loop[1,3)x2", 2e12)]["speedup_vs_same_size"]
    assert s["mean"] == pytest.approx(2.0) and s["low"] == s["high"] == s["mean"] and s["seeds"] == 1
    assert data["iso_flops"] == []  # one budget: no curve across budgets
    assert "(1 seed)" in (out / "speedups.md").read_text()


def run_report(*args, cwd):
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    return subprocess.run([sys.executable, str(ROOT / "orchestrator" / "report.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_bad_input_is_one_clear_message(store, tmp_path):
    make_sweep(store, "exists", budgets=(1e12,), seeds=(0,))
    cases = [
        (["--tracking-uri", store, "--experiment", "nope"], "no experiment 'nope'"),
        (["--tracking-uri", f"sqlite:///{tmp_path / 'missing.db'}"], "no tracking database"),
        (["--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--tracking-uri", store, "--sweep-run", "0" * 32], "no run"),
    ]
    client = MlflowClient(store)
    empty = client.create_experiment("empty")
    client.create_run(empty, tags={"loopmdm.role": "sweep"})
    cases.append((["--tracking-uri", store, "--experiment", "empty"], "has no finished trial"))
    for args, message in cases:
        out = run_report(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


def test_running_sweep_is_reported_as_such(store, tmp_path, capsys):
    parent = make_sweep(store, "live", budgets=(1e12,), seeds=(0,))
    MlflowClient(store).update_run(parent, "RUNNING")
    assert report.main(["--tracking-uri", store, "--out", str(tmp_path / "r"), "--no-log"]) == 0
    assert "still running" in capsys.readouterr().out


def test_report_through_a_tracking_server(tmp_path):
    """The same report from an `mlflow server` (HTTP, artifacts proxied), as on a shared cluster."""
    server, uri = start_mlflow_server(tmp_path / "server.db")
    try:
        parent = make_sweep(uri, "remote", budgets=(1e12,), seeds=(0, 1), loops=((2, 3.0),))
        out = run_report("--tracking-uri", uri, "--out", str(tmp_path / "r"), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "3.00x [3.00, 3.00]" in out.stdout
        assert "report/index.html" in [a.path for a in MlflowClient(uri).list_artifacts(parent, "report")]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_inference_sections(store, tmp_path, capsys):
    make_sweep(store, "infer", budgets=(1e12,), seeds=(0, 1), loops=((2, 3.0),), inference=True)
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert "validation loss vs inference loops" in printed and "attention among masked positions" in printed
    data = json.loads((out / "speedups.json").read_text())
    scaling = {r["label"]: r for r in data["inference_loop_scaling"]}
    loop = scaling["loop[1,3)x2"]
    assert loop["trained_loops"] == 2 and sorted(loop["val_loss"]) == ["1", "2", "3", "4"]
    assert min(loop["val_loss"], key=loop["val_loss"].get) == "2"
    attn = {r["label"]: r for r in data["attention_mask_to_mask"]}
    assert attn["loop[1,3)x2"]["layers"] == ["L0", "L1#1", "L2#1", "L1#2", "L2#2", "L3"]
    assert attn["loop[1,3)x2"]["share"] == pytest.approx([0.5, 0.51, 0.52, 0.53, 0.54, 0.55])
    assert attn["same_size(4L)"]["layers"] == ["L0", "L1", "L2", "L3"]
    assert (out / "loss_vs_inference_loops.png").stat().st_size > 1000
    assert (out / "attention_shares.png").stat().st_size > 1000
    assert "Attention among masked positions" in (out / "index.html").read_text()
    # Task accuracy per schedule, pooled over seeds; the ramp saves 25% against the cheapest fixed count as
    # accurate (fixed:2, 2 GFLOPs), and fixed counts past the trained one buy nothing.
    assert "reasoning-task accuracy vs inference compute" in printed
    task = {(r["label"], r["schedule"]): r for r in data["task_accuracy"]}
    ramp = task[("loop[1,3)x2", "ramp:4:1")]
    assert ramp["accuracy"]["mean"] == pytest.approx(0.2) and ramp["accuracy"]["problems"] == 200
    assert ramp["compute_saved"] == pytest.approx(0.25) and ramp["flops_per_problem"] == 1.5e9
    assert task[("loop[1,3)x2", "fixed:4")]["compute_saved"] is None
    assert ("same_size(4L)", "ramp:2:1") not in task and task[("same_size(4L)", "fixed:2")]["accuracy"]["mean"] == 0.1
    assert "| loop[1,3)x2 | 1e+12 | 2 | ramp:4:1 | 0.200 [0.150, 0.261] | 1.5000 | 25% |" in printed
    assert (out / "accuracy_vs_inference_flops.png").stat().st_size > 1000
