"""report.py on stores with known answers (synthetic sweeps in real MLflow/SQLite), and its error paths."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import start_mlflow_server
from orchestrator import isoflops as iso
from orchestrator import report, report_figures, report_summary, report_tables, report_text, tracking
from orchestrator.comparison import Comparison, Row, Versus
from synthetic_sweep import make_sweep

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
    assert fast["speedup_vs_same_size"]["median"] == pytest.approx(3.0, rel=1e-6)
    assert fast["speedup_vs_same_size"]["seeds"] == 2 and fast["speedup_vs_same_size"]["reached"] == 2
    assert fast["speedup_vs_same_size"]["verdict"] == "faster"
    assert fast["speedup_vs_depth_matched"]["median"] == pytest.approx(2.0, rel=1e-6)  # 3.0 / 1.5
    slow = rows[("loop[1,3)x3", 3e12)]
    assert slow["speedup_vs_same_size"]["median"] is None and slow["speedup_vs_same_size"]["reached"] == 0
    assert slow["speedup_vs_same_size"]["high"] is None and slow["speedup_vs_same_size"]["verdict"] == "slower"
    assert "| loop[1,3)x2 | [1,3) | 2 |" in printed and "3.00x [3.00, 3.00]; reached 2/2 seeds" in printed
    assert "not reached (median); reached 0/2 seeds" in printed
    # Above noise: the baseline's spread (no noise here: 0) and the paired loss difference at its final FLOPs,
    # 60 (3e12)^-1/4 - 60 (1e12)^-1/4 for the 3x loop at budget 1e12
    noise = fast["noise_vs_same_size"]
    assert noise["baseline"] == "same_size(4L)" and noise["baseline_final_loss"]["std"] == pytest.approx(0, abs=1e-12)
    gap = 60 * 3e12 ** -0.25 - 60 * 1e12 ** -0.25
    assert noise["paired_loss_difference"]["mean"] == pytest.approx(gap, rel=1e-6)
    assert noise["paired_loss_difference"]["verdict"] == "lower loss"
    assert f"| loop[1,3)x2 | 1e+12 | same_size(4L) | 2 | 0.0600 ± 0.0000 | {gap:+.4f} [{gap:+.4f}, {gap:+.4f}] | " \
           "lower loss | faster |" in printed
    assert "one shared learning rate 0.001 for every variant (not tuned)" in printed
    # Honesty: the sweep, the runs used and the one left out with its reason.
    assert f"parent run {parent}" in printed and "runs used: 20 finished trials of 21" in printed
    assert "left out: loop[1,3)x9-b1e+12-s99 (FAILED: RuntimeError: synthetic failure)" in printed
    assert "validation negative ELBO" in printed
    # Two budgets: the iso-FLOPs (finished schedules) speedup is reported too.
    across = {r["label"]: r for r in data["iso_flops"]}
    assert across["loop[1,3)x2"]["vs_same_size"]["median"] == pytest.approx(3.0, rel=1e-6)
    assert data["held_out_accuracy"] == []  # no val/accuracy in this sweep
    # 20 eval points of one power law per curve: the fitted trends extrapolate the known factors, labelled, with
    # the seeds' interval (identical seeds: no width) and the fits that passed the gate
    trend = {(e["label"], e["budget_multiple"]): e for e in data["extrapolations"]}
    assert trend[("loop[1,3)x2", 10)]["status"] == "reported" and trend[("loop[1,3)x2", 10)]["reason"] is None
    assert trend[("loop[1,3)x2", 10)]["speedup"] == pytest.approx(3.0, rel=1e-3)
    assert trend[("loop[1,3)x2", 10)]["low"] == pytest.approx(3.0, rel=1e-3)
    assert trend[("loop[1,3)x2", 10)]["fit"]["r2"] == pytest.approx(1.0, abs=1e-6)
    assert trend[("loop[1,3)x3", 100)]["speedup"] == pytest.approx(0.5, rel=1e-3)
    assert trend[("loop[1,3)x3", 100)]["flops"] == pytest.approx(3e14)
    assert ("EXTRAPOLATION (fit, not measured): loop[1,3)x2 vs same_size(4L): at 10x the largest budget: "
            "3.00x [3.00, 3.00]; at 100x the largest budget: 3.00x [3.00, 3.00]") in printed
    page = (out / "index.html").read_text()
    assert "<p class='note'>EXTRAPOLATION (fit, not measured)" in page and "warn" not in page
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

    from orchestrator.comparison import _extrapolations
    from orchestrator.sweep_data import TrialRecord
    from synthetic_sweep import power
    flops = np.linspace(1e11, 2e12, 20)

    def trial(variant, seed, shift):
        tags = {"loopmdm.variant": variant, "loopmdm.label": variant, "loopmdm.seed": str(seed),
                "loopmdm.budget_flops": "2e12"}
        return TrialRecord(f"{variant}{seed}", variant, "FINISHED", tags, {},
                           list(zip(flops.tolist(), power(flops * shift).tolist())))
    trials = [trial("same_size", 0, 1.0), trial("same_size", 1, 1.0), trial("loop", 0, 2.0), trial("loop", 1, 8.0)]
    groups = {(2e12, s): [t for t in trials if t.seed == s] for s in (0, 1)}
    (got,) = _extrapolations(trials, groups, "val/loss")
    want = ((2.0 ** -0.25 + 8.0 ** -0.25) / 2) ** -4
    at10 = got.at[0]
    assert at10.factor == 10 and at10.speedup == pytest.approx(want, rel=1e-3) and abs(want - 3.77) < 0.01
    # resampling the 2 seeds: both seed 0 (chance 1/4) predicts 2x, both seed 1 (1/4) 8x: the interval's ends
    assert (at10.low, at10.high) == pytest.approx((2.0, 8.0), rel=1e-3)


def test_single_seed_and_single_budget(store, tmp_path):
    make_sweep(store, "one", budgets=(2e12,), seeds=(0,), loops=((2, 2.0),))
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--out", str(out), "--no-log"]) == 0
    rows, data = rows_by_label(out)
    s = rows[("loop[1,3)x2", 2e12)]["speedup_vs_same_size"]
    assert s["median"] == pytest.approx(2.0) and s["low"] is None and s["high"] is None and s["seeds"] == 1
    assert s["verdict"] == "1 seed: no interval"
    assert data["iso_flops"] == []  # one budget: no curve across budgets
    md = (out / "speedups.md").read_text()
    assert "2.00x (1 seed: no interval); reached 1/1 seeds" in md
    assert "| 0.0505 (1 seed: no spread) |" in md and "(1 seed: no interval) | 1 seed: no interval |" in md
    assert {(e["status"], e["reason"]) for e in data["extrapolations"]} == {("withheld", "1 seed, no interval")}
    assert "at 10x the largest budget: withheld: 1 seed, no interval" in md and "0.00x" not in md
    assert md.startswith("- No comparison can be judged against the seed-to-seed noise: each rests on 1 seed, so "
                         "none has an interval.\n")
    assert data["summary"]["noise"] == {**data["summary"]["noise"], "comparisons": 2, "exceed_seed_noise": 0,
                                        "one_seed": 2}


def run_report(*args, cwd):
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    return subprocess.run([sys.executable, str(ROOT / "orchestrator" / "report.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_bad_input_is_one_clear_message(store, tmp_path, monkeypatch, capsys):
    make_sweep(store, "exists", budgets=(1e12,), seeds=(0,))
    out = run_report("--tracking-uri", store, "--experiment", "nope", cwd=tmp_path)  # as users run it
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (out.stdout, out.stderr)
    assert "no experiment 'nope'" in lines[0]
    cases = [  # the same entry point in this process: seconds of imports saved per case
        (["--tracking-uri", f"sqlite:///{tmp_path / 'missing.db'}"], "no tracking database"),
        (["--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--tracking-uri", store, "--sweep-run", "0" * 32], "no run"),
    ]
    client = MlflowClient(store)
    empty = client.create_experiment("empty")
    client.create_run(empty, tags={"loopmdm.role": "sweep"})
    cases.append((["--tracking-uri", store, "--experiment", "empty"], "has no finished trial"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.chdir(tmp_path)
    for args, message in cases:
        assert report.main([*args, "--out", str(tmp_path / "r")]) == 2, args
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1] and err.strip().splitlines()[-1].startswith("error: "), \
            (args, err)
        assert not (tmp_path / "r").exists(), args  # nothing written


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
    assert "## Validation loss vs inference loops" in printed and "## Attention among masked positions" in printed
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
    assert "## Reasoning-task accuracy vs inference compute" in printed
    task = {(r["label"], r["schedule"]): r for r in data["task_accuracy"]}
    ramp = task[("loop[1,3)x2", "ramp:4:1")]
    assert ramp["accuracy"]["mean"] == pytest.approx(0.2) and ramp["accuracy"]["problems"] == 200
    assert ramp["compute_saved"] == pytest.approx(0.25) and ramp["flops_per_problem"] == 1.5e9
    assert task[("loop[1,3)x2", "fixed:4")]["compute_saved"] is None
    # The store holds the baseline at fixed:1 and fixed:2 (as stores written before evaluate kept a one-pass model
    # to one pass do): the report keeps its one pass only, in both sections.
    assert [s for label, s in task if label == "same_size(4L)"] == ["fixed:1"]
    assert task[("same_size(4L)", "fixed:1")]["accuracy"]["mean"] == 0.1
    assert list(scaling["same_size(4L)"]["val_loss"]) == ["1"]
    assert "| loop[1,3)x2 | 1e+12 | 2 | ramp:4:1 | 0.200 [0.150, 0.261] | 1.5000 | 25% |" in printed
    assert (out / "accuracy_vs_inference_flops.png").stat().st_size > 1000


def test_censored_speedups_over_seeds(store, tmp_path, capsys):
    """Per-seed speedups 3x, never, 2x (and never, never, 3x): the median ranks the seed that never reached the
    target lowest, the interval says so, and nothing is averaged over only the seeds that reached."""
    make_sweep(store, "mixed", budgets=(1e12,), seeds=(0, 1, 2), loops=((2, (3.0, 0.5, 2.0)), (3, (0.5, 0.5, 3.0))))
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    rows, data = rows_by_label(out)
    s = rows[("loop[1,3)x2", 1e12)]["speedup_vs_same_size"]
    assert s["median"] == pytest.approx(2.0) and s["low"] is None and s["high"] == pytest.approx(3.0)
    assert (s["reached"], s["seeds"], s["lower_bound"], s["verdict"]) == (2, 3, False, "no detectable difference")
    assert "| 2.00x [not reached, 3.00]; reached 2/3 seeds | 1.33x [not reached, 2.00]; reached 2/3 seeds |" in printed
    assert "not reached (median); reached 1/3 seeds" in printed
    assert rows[("loop[1,3)x3", 1e12)]["speedup_vs_same_size"]["median"] is None
    assert "2.50x" not in printed  # the mean of the two seeds that reached
    assert "2.00x [not reached, 3.00]; reached 2/3 seeds" in (out / "speedups.csv").read_text()
    # The paired loss difference at the baseline's final FLOPs: 60 (1e12 s)^-1/4 - 60 (1e12)^-1/4 per seed, a
    # Student t interval with 2 degrees of freedom (4.303) around their mean
    gaps = [60 * (1e12 * f) ** -0.25 - 60 * 1e12 ** -0.25 for f in (3.0, 0.5, 2.0)]
    mean = sum(gaps) / 3
    half = 4.303 * math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2) / math.sqrt(3)
    diff = rows[("loop[1,3)x2", 1e12)]["noise_vs_same_size"]["paired_loss_difference"]
    assert diff["mean"] == pytest.approx(mean, rel=1e-6) and diff["seeds"] == 3
    assert (diff["low"], diff["high"]) == pytest.approx((mean - half, mean + half), rel=1e-6)
    assert diff["verdict"] == "no detectable difference"
    assert (out / "speedup_bars.png").stat().st_size > 1000


def versus(median, reached, seeds, high=None):
    speedup = iso.CensoredMedian(median, None if median is None else median, high or median, reached, seeds, False)
    return Versus("base", speedup, 1.0, None, None)


def test_speedup_bars_mark_censored_cells(monkeypatch, tmp_path):
    """A cell whose median seed never reached the target is an empty hatched bar, annotated; the legend lists
    only the series that have bars."""
    from dashboards import figures
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: figs.append(fig) or path)
    row = lambda label, vs: Row(label, "loop", "[1,3)", 2, 1, 1, 1e12, iso.bootstrap([1.0]), vs)
    figures.speedup_bars(report_figures.speedup_bars(Comparison([
        row("a", {"same_size": versus(2.0, 2, 2), "depth_matched": None}),
        row("b", {"same_size": versus(None, 1, 2, high=4.0)})])), tmp_path / "x.png")
    ax = figs[0].axes[0]
    assert [t.get_text() for t in figs[0].legends[0].get_texts()] == ["vs same-size", "median seed: not reached"]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and not hatched[0].get_fill() and hatched[0].get_height() == 4.0
    texts = [t.get_text() for t in ax.texts]
    assert "not reached\n1/2 reached" in texts and "2.00x\n2/2 reached" in texts


def test_extrapolation_withheld_for_a_bad_fit():
    """A baseline whose loss drops in one jump: no power law describes it (R^2 0.75), so no factor is printed."""
    import numpy as np

    from orchestrator.comparison import _extrapolations
    from orchestrator.sweep_data import TrialRecord
    flops = np.logspace(10, 13, 16).tolist()
    shapes = {"same_size": [5.0] * 8 + [4.0] * 8, "loop": (60 * np.array(flops) ** -0.25).tolist()}

    def trial(variant, seed):
        tags = {"loopmdm.variant": variant, "loopmdm.label": variant, "loopmdm.seed": str(seed),
                "loopmdm.budget_flops": "1e13"}
        return TrialRecord(f"{variant}{seed}", variant, "FINISHED", tags, {}, list(zip(flops, shapes[variant])))
    trials = [trial(v, s) for v in shapes for s in (0, 1)]
    (got,) = _extrapolations(trials, {(1e13, s): [t for t in trials if t.seed == s] for s in (0, 1)}, "val/loss")
    assert [e.status for e in got.at] == ["withheld", "withheld"] and got.baseline_fit.problem
    line = report_tables.extrapolation_lines(Comparison([], extrapolations=[got]))[0]
    assert line == ("EXTRAPOLATION (fit, not measured): loop vs same_size: at 10x the largest budget: withheld: fit "
                    "R^2 0.75 < 0.95 for same_size; at 100x the largest budget: withheld: fit R^2 0.75 < 0.95 for "
                    "same_size")


def test_task_sweep_compares_answer_loss_and_accuracy(store, tmp_path, capsys):
    """Every trial logs val/answer_loss (the shift squared: 9x over same-size, 4x over depth-matched) and
    val/accuracy (linear in log FLOPs: the loop reaches the same-size's final accuracy with 3x fewer FLOPs)."""
    make_sweep(store, "task", budgets=(1e12,), seeds=(0, 1), loops=((2, 3.0),), task=True)
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--experiment", "task", "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    rows, data = rows_by_label(out)
    assert data["loss_metric"] == "val/answer_loss"
    assert ("loss compared: validation negative ELBO on answer tokens only (val/answer_loss, nats per answer "
            "token") in printed and "| final answer loss |" in printed
    loop = rows[("loop[1,3)x2", 1e12)]
    assert loop["speedup_vs_same_size"]["median"] == pytest.approx(9.0, rel=1e-6)
    assert loop["speedup_vs_depth_matched"]["median"] == pytest.approx(4.0, rel=1e-6)
    assert {e["budget_multiple"]: e["speedup"] for e in data["extrapolations"]} == pytest.approx({10: 9.0, 100: 9.0},
                                                                                                rel=1e-3)
    acc = {r["label"]: r for r in data["held_out_accuracy"]}
    gap = 0.2 * math.log10(3)  # accuracy 0.5 + 0.2 log10(3 C / 1e12) against 0.5 at C = 1e12
    assert acc["loop[1,3)x2"]["gap_vs_same_size"] == {"mean": pytest.approx(gap), "low": pytest.approx(gap),
                                                      "high": pytest.approx(gap), "method": "t over seeds",
                                                      "verdict": "higher accuracy"}
    assert acc["loop[1,3)x2"]["speedup_vs_same_size"]["median"] == pytest.approx(3.0, rel=1e-6)
    assert acc["loop[1,3)x2"]["seed_mean_t"]["mean"] == pytest.approx(0.5 + gap)
    wilson = iso.wilson(120, 200)  # round(100 x 0.5954) = 60 correct of 100, per seed
    assert acc["loop[1,3)x2"]["pooled_wilson"] == {"mean": 0.6, "low": wilson.low, "high": wilson.high,
                                                   "problems": 200}
    assert acc["same_size(4L)"]["gap_vs_same_size"] is None and acc["same_size(4L)"]["pooled_wilson"]["mean"] == 0.5
    assert (f"| loop[1,3)x2 | 1e+12 | 2 | 0.600 [{wilson.low:.3f}, {wilson.high:.3f}] (200 problems) | "
            f"0.595 [0.595, 0.595] | +0.095 [+0.095, +0.095] | higher accuracy | 3.00x [3.00, 3.00]; reached 2/2 "
            f"seeds |") in printed
    assert (out / "accuracy_vs_flops.png").stat().st_size > 1000
    assert "Held-out accuracy" in (out / "index.html").read_text()


def test_one_seed_accuracy_gap_is_sampling_noise_only(store, tmp_path):
    make_sweep(store, "task1", budgets=(2e12,), seeds=(0,), loops=((2, 2.0),), task=True)
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--experiment", "task1", "--out", str(out), "--no-log"]) == 0
    _, data = rows_by_label(out)
    gap = {r["label"]: r for r in data["held_out_accuracy"]}["loop[1,3)x2"]["gap_vs_same_size"]
    # accuracies 0.5 + 0.2 log10(4) = 0.620 and 0.5 + 0.2 log10(2) = 0.560 of 100 problems: 62 and 56 correct
    want = iso.newcombe(62, 100, 56, 100)
    assert (gap["low"], gap["high"]) == pytest.approx((want.low, want.high))
    assert gap["method"] == "1 seed: sampling noise only"
    assert gap["verdict"] == "no detectable difference (1 seed: sampling noise only)"
    assert "(1 seed: sampling noise only)" in (out / "speedups.md").read_text()


def test_lr_ladder_candidates_are_only_under_learning_rates(store, tmp_path, capsys):
    """Each variant's chosen LR at every budget, the other ladder LRs at the smallest one (curves needing 2x the
    FLOPs): the comparisons see only the chosen trials, the 'Learning rates' section all of them."""
    make_sweep(store, "ladder", seeds=(0, 1), loops=((2, 3.0),),
               lr_ladder={"same_size": 1e-3, "loop": 3e-3, "depth_matched": 3e-4})
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--experiment", "ladder", "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    rows, data = rows_by_label(out)
    assert "runs used: 12 finished trials of 24 (12 LR-ladder candidates are in no comparison" in printed
    for budget in (1e12, 3e12):
        assert rows[("loop[1,3)x2", budget)]["speedup_vs_same_size"]["median"] == pytest.approx(3.0, rel=1e-6)
        assert rows[("same_size(4L)", budget)]["final_val_loss"]["seeds"] == 2
    lr = data["learning_rates"]
    assert lr["ladder_budget"] == 1e12
    cells = {(c["label"], c["lr"]): c for c in lr["ladder"]}
    assert cells[("same_size(4L)", 1e-3)]["chosen"] and cells[("same_size(4L)", 1e-3)]["loss"] == pytest.approx(0.06)
    assert not cells[("same_size(4L)", 3e-4)]["chosen"]
    assert cells[("same_size(4L)", 3e-4)]["loss"] == pytest.approx(60 * 5e11 ** -0.25)  # 2x the FLOPs needed
    assert cells[("loop[1,3)x2", 3e-3)]["loss"] == pytest.approx(60 * 3e12 ** -0.25)
    assert cells[("loop[1,3)x2", 3e-3)]["seeds"] == 2
    assert ("loop[1,3)x2: used lr 0.003 at every budget (chosen at budget 1e+12 by final validation loss, seeds "
            "averaged)") in lr["lines"]
    assert "| same_size(4L) | 0.0714 | 0.0600 (chosen) | 0.0714 |" in printed
    assert "| variant | lr 0.0003 | lr 0.001 | lr 0.003 |" in printed


def test_page_explains_what_it_shows(store, tmp_path, capsys):
    """Every table and figure, on the page and in speedups.md, says what it shows and how to read it (one set of
    texts: report_text.CAPTIONS and report_text.NOTATION); the summary on top counts the comparisons that exceed
    the seed noise (known here: the 3x loop beats both baselines in every seed, the other loop's seeds disagree) and
    states the sweep's scale; the extrapolations come after everything measured, in the grey note style."""
    from html import escape
    make_sweep(store, "explained", budgets=(1e12,), seeds=(0, 1, 2), loops=((2, 3.0), (3, (0.5, 0.5, 3.0))),
               inference=True)
    out = tmp_path / "r"
    assert report.main(["--tracking-uri", store, "--experiment", "explained", "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    page, md = (out / "index.html").read_text(), (out / "speedups.md").read_text()
    data = json.loads((out / "speedups.json").read_text())
    noise = ("2 of 4 comparisons exceed the seed-to-seed noise: loop[1,3)x2 vs same_size(4L) at budget 1e+12 (lower "
             "loss; speedup: faster); loop[1,3)x2 vs depth_matched(6L) at budget 1e+12 (lower loss; speedup: faster). "
             "The other 2 show no detectable difference.")
    size = ("scale: 15 trials compared: 5 variants, 1 budget (1e+12 training FLOPs), 3 seeds; models of 4,000 to "
            "8,000 parameters and 400 to 800 FLOPs per token; 1.5e+13 training FLOPs in all (15 runs, each to its "
            "last evaluation)")
    summary = data["summary"]
    assert (summary["noise"]["comparisons"], summary["noise"]["exceed_seed_noise"], summary["noise"]["one_seed"]) \
        == (4, 2, 0)
    assert summary["scale"]["total_training_flops"] == pytest.approx(1.5e13)
    assert summary["scale"]["params"] == [4000, 8000] and summary["scale"]["seeds"] == 3
    # stdout: the summary is the first paragraph, the speedup table the second
    first, second = printed.split("\n\n")[:2]
    assert first.splitlines()[0] == noise and size in first.splitlines()
    assert [line.split(" | ")[0][2:] for line in second.splitlines() if line.startswith("| ")][1:3] == \
        ["loop[1,3)x2", "loop[1,3)x3"]
    assert md.startswith(f"- {noise}\n") and size in md
    assert f"<p class='summary'><strong>{escape(noise)}</strong></p>" in page and escape(size) in page
    # what a speedup is and what its cells mean; '*' in the inference table; every section and figure explained
    captions = report_text.CAPTIONS
    tables = report_text.NOTATION + [captions[k] for k in ("speedups", "noise", "learning_rates", "loop_scaling",
                                                           "attention", "task", "extrapolations")]
    plots = [captions[k] for k in ("figures", "loss_vs_flops", "speedup_bars", "loss_vs_loops",
                                   "loss_vs_inference_loops", "attention_shares", "accuracy_vs_inference_flops")]
    for text in tables + plots:
        assert escape(text) in page and text in md and (text in printed or text in plots), text
    assert captions["accuracy"] not in md and captions["accuracy_vs_flops"] not in md  # no accuracy
    for phrase in ("speedup: how many times fewer training FLOPs", "not reached: the curve never got down",
                   "≥: the looped config already beat the target", "reached k/n seeds: in k of the n seeds",
                   "(1 seed: no interval): a single seed", "* marks the loop count the model was trained with"):
        assert escape(phrase) in page and phrase in md, phrase
    for stem, title in report_text.FIGURE_TITLES.items():
        if stem != "accuracy_vs_flops":
            assert f"<b>{escape(title)}.</b> {escape(captions[stem])}</figcaption>" in page
            assert f"![{title}]({stem}.png)" in md
    # order: summary, the measured tables, the figures, then the fitted extrapolations (grey notes), provenance
    at = [page.index(s) for s in ("<h2>Summary</h2>", "<h2>Speedups</h2>", "<h2>Is it above noise?</h2>",
                                  "<h2>Figures</h2>", "<h2>Extrapolations (fit, not measured)</h2>",
                                  "<h2>Provenance</h2>")]
    assert at == sorted(at) and page.rindex("<figure>") < at[4]
    assert f"<p class='note'>{escape(captions['extrapolations'])}</p>" in page
    assert "<p class='note'>EXTRAPOLATION (fit, not measured)" in page
    assert md.index("## Figures") < md.index("## Extrapolations") < md.index("## Provenance")
    # the explanations add no table rows and no images: speedups, noise, loop scaling, attention, task
    assert page.count("<table") == 5 and page.count("data:image/png;base64,") == 6


def test_noise_summary_counts_only_intervals_over_seeds():
    """A speedup interval that excludes 1.0x (a bootstrap over 2 seeds: their range) is mentioned, not counted;
    comparisons on 1 seed are not judged."""
    def row(label, budget, same, depth):
        versus = {"same_size": Versus("same_size(4L)", same[0], 0.06, 0.001, same[1]),
                  "depth_matched": Versus("depth_matched(6L)", depth[0], 0.05, 0.001, depth[1])}
        return Row(label, "loop", "[1,3)", 2, 4000, 600, budget, iso.bootstrap([1.0]), versus)
    faster = iso.CensoredMedian(2.0, 1.5, 3.0, 2, 2, False)
    even = iso.CensoredMedian(1.0, 0.8, 1.2, 2, 2, False)
    one = iso.CensoredMedian(2.0, None, None, 1, 1, False)
    rows = [row("loop[1,3)x2", 1e12, (faster, iso.t_interval([-0.01, 0.012])),
                (even, iso.t_interval([0.01, -0.009])))]
    lines, counts = report_summary.noise_summary(Comparison(rows))
    assert lines[0] == ("No comparison exceeds the seed-to-seed noise: at this scale the sweep shows no detectable "
                        "difference (2 of 2 comparisons have a 95% interval over seeds, and each includes no "
                        "difference).")
    assert "excludes 0. Speedup verdicts are not counted" in lines[1]
    assert "1 more comparison has a speedup interval that excludes 1.0x" in lines[1]
    assert (counts["comparisons"], counts["exceed_seed_noise"]) == (2, 0)
    rows.append(row("loop[1,3)x2", 3e12, (one, iso.t_interval([-0.01])), (one, iso.t_interval([-0.02]))))
    # t with 1 degree of freedom (12.7): only differences this close over the 2 seeds exclude 0
    rows.append(row("loop[1,3)x3", 1e12, (even, iso.t_interval([-0.0100, -0.0101])),
                    (even, iso.t_interval([0.100, 0.101]))))
    lines, counts = report_summary.noise_summary(Comparison(rows))
    assert lines[0] == ("2 of 6 comparisons exceed the seed-to-seed noise: loop[1,3)x3 vs same_size(4L) at budget "
                        "1e+12 (lower loss; speedup: no detectable difference); loop[1,3)x3 vs depth_matched(6L) at "
                        "budget 1e+12 (higher loss; speedup: no detectable difference). The other 2 show no "
                        "detectable difference. 2 of 6 rest on 1 seed (no interval) and are not judged.")
    assert (counts["comparisons"], counts["exceed_seed_noise"], counts["one_seed"]) == (6, 2, 2)
    assert report_summary.noise_summary(Comparison([]))[0] == [
        "No looped config has a baseline in this sweep: there is nothing to compare."]
