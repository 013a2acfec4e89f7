"""lr_ladder: each variant's learning rate chosen at the smallest budget, then used at the larger ones."""

import json
import math
import os
from pathlib import Path

import pytest

from loopmdm_core.errors import ConfigError
from orchestrator import lr_ladder
from orchestrator import trials as trials_of
from orchestrator import spec as specs

BASE = {"model": {"n_layers": 4, "d_model": 64, "n_heads": 4}, "train": {"batch_size": 8}}


def ladder_sweep(**overrides):
    data = {"name": "t", "base": BASE, "loops": {"loop_start": [1], "loop_end": [3], "n_loops": [2]},
            "baselines": ["same_size", "depth_matched"], "budgets": [2e12, 1e12], "seeds": [0, 1],
            "lr_ladder": {"values": [1e-3, 3e-3]}}
    data.update(overrides)
    return specs.parse(data)


def test_ladder_is_every_variant_at_every_lr_at_the_smallest_budget():
    spec = ladder_sweep()
    ladder = trials_of.expand(spec)
    assert len(ladder) == 3 * 2 * 2  # variants x lrs x seeds
    assert {t.budget_flops for t in ladder} == {1e12}
    assert {(t.label, t.lr, t.seed) for t in ladder} == {
        (label, lr, seed) for label in ("loop[1,3)x2", "same_size(4L)", "depth_matched(6L)")
        for lr in (1e-3, 3e-3) for seed in (0, 1)}
    assert len({t.key for t in ladder}) == len({t.name for t in ladder}) == len(ladder)
    t = next(t for t in ladder if t.label == "same_size(4L)" and t.lr == 3e-3 and t.seed == 0)
    assert t.name == "same_size(4L)-b1e+12-s0-lr0.003"  # the label stays the variant's; the name tells lrs apart
    assert t.tags["loopmdm.lr"] == "0.003" and t.tags["loopmdm.lr_ladder"] == "candidate"
    assert t.config.train.lr == 3e-3

    waiting = trials_of.later_trials(spec)  # before the choice: the larger budget, one trial per variant and seed
    assert len(waiting) == 3 * 2 and {t.budget_flops for t in waiting} == {2e12}
    chosen = {"loop[1,3)x2": 3e-3, "same_size(4L)": 1e-3, "depth_matched(6L)": 3e-3}
    later = trials_of.later_trials(spec, chosen)
    assert sorted((t.label, t.seed, t.lr) for t in later) == sorted(
        (label, seed, lr) for label, lr in chosen.items() for seed in (0, 1))
    assert all(t.tags["loopmdm.lr_ladder"] == "chosen" and t.budget_flops == 2e12 for t in later)
    assert [t.plan.steps for t in later] == [t.plan.steps for t in waiting]  # the lr changes no step count
    # a variant whose every ladder lr failed has no choice: it is not trained further
    assert {t.label for t in trials_of.later_trials(spec, {"same_size(4L)": 1e-3})} == {"same_size(4L)"}


def test_ladder_dedupes_within_its_stage_and_tags_only_ladder_sweeps():
    spec = ladder_sweep(loops=[{"loop_start": 1, "loop_end": 3, "n_loops": 2},
                               {"loop_start": 1, "loop_end": 3, "n_loops": 2, "loop_sampling": "uniform:1:4"}],
                        seeds=[0], budgets=[1e12])
    ladder = trials_of.expand(spec)
    # one same_size shared by both loops, at each lr once
    assert sorted(t.label for t in ladder if t.variant == "same_size") == ["same_size(4L)"] * 2
    assert len(ladder) == 5 * 2 and trials_of.later_trials(spec) == []  # one budget: the ladder is the whole sweep
    plain = specs.parse({"name": "t", "base": BASE, "loops": {"loop_start": [1], "loop_end": [3], "n_loops": [2]},
                         "budgets": [1e12, 2e12]})
    assert trials_of.later_trials(plain) == []
    assert all("loopmdm.lr_ladder" not in t.tags and "-lr" not in t.name for t in trials_of.expand(plain))


BAD = [
    ({"lr_ladder": {"values": [1e-3]}}, "lr_ladder.values: give at least two learning rates"),
    ({"lr_ladder": {}}, "lr_ladder.values: give at least two learning rates"),
    ({"lr_ladder": {"values": [1e-3, -3e-3]}}, "lr_ladder.values[1]: must be > 0, got -0.003"),
    ({"lr_ladder": {"values": [1e-3, 3e-3, 1e-3]}}, "lr_ladder.values[2]: 0.001 is listed twice"),
    ({"lr_ladder": {"values": [1e-3, "fast"]}}, "lr_ladder.values[1]: expected a number"),
    ({"lr_ladder": {"value": [1e-3, 3e-3]}}, "lr_ladder.value: unknown key; did you mean 'lr_ladder.values'?"),
    ({"lr_ladder": [1e-3, 3e-3]}, "lr_ladder: expected a mapping"),
    ({"base": {**BASE, "train": {"lr": 1e-3}}}, "base.train.lr: set by the sweep's lr_ladder:, not by base"),
    ({"search": {"params": {"train.lr": {"low": 1e-4, "high": 1e-2}}}},
     "lr_ladder: cannot be combined with search: (both tune the learning rate)"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_ladders_name_the_yaml_path(change, message):
    with pytest.raises(ConfigError) as info:
        ladder_sweep(**change)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_base_lr_is_fine_without_a_ladder():
    spec = specs.parse({"name": "t", "base": {**BASE, "train": {"lr": 3e-3}}, "budgets": [1e12],
                        "loops": {"loop_start": [1], "loop_end": [3], "n_loops": [2]}})
    assert {t.lr for t in trials_of.expand(spec)} == {3e-3}


def test_dry_run_text_lists_both_stages():
    spec = ladder_sweep()
    text = trials_of.dry_run_text(spec, trials_of.expand(spec), trials_of.later_trials(spec))
    assert "stage 1, the lr ladder (12 trials): every variant at lr 0.001, 0.003, every seed, at budget 1e+12" in text
    assert "stage 2 (6 trials), decided after stage 1" in text
    assert text.count("chosen at budget 1e+12") == 6


def run(label, lr, loss, answer=None):
    final = None if loss is None else {"val/loss": loss, **({"val/answer_loss": answer} if answer is not None else {})}
    return lr_ladder.LadderRun(label, lr, final)


def test_choice_is_the_lowest_seed_mean_loss():
    runs = [run("loop", 1e-3, 3.0), run("loop", 1e-3, 2.0),  # mean 2.5
            run("loop", 3e-3, 2.4), run("loop", 3e-3, 2.8),  # mean 2.6: its best seed is the best of all, still loses
            run("base", 1e-3, 3.0), run("base", 1e-3, 3.2),  # mean 3.1
            run("base", 3e-3, 2.9), run("base", 3e-3, 3.1)]  # mean 3.0
    choice = lr_ladder.choose_lrs(runs)
    assert choice.metric == "val/loss"
    assert choice.chosen == {"loop": 1e-3, "base": 3e-3}
    assert choice.means["loop"] == {1e-3: 2.5, 3e-3: pytest.approx(2.6)}
    assert lr_ladder.choose_lrs(list(reversed(runs))) == choice  # what a resumed sweep recomputes, whatever the order
    assert json.loads(json.dumps(choice.as_dict()))["variants"]["base"] == {"chosen": 3e-3,
                                                                            "mean_loss": {"0.001": 3.1, "0.003": 3.0}}


def test_ties_go_to_the_smaller_lr_and_unfinished_lrs_are_out():
    tie = lr_ladder.choose_lrs([run("v", 3e-3, 2.0), run("v", 3e-3, 3.0), run("v", 1e-3, 2.5), run("v", 1e-3, 2.5)])
    assert tie.chosen == {"v": 1e-3}
    # a seed that diverged (no final loss, or an infinite one) rules its lr out; with every lr out, no choice
    choice = lr_ladder.choose_lrs([run("v", 1e-3, 2.5), run("v", 1e-3, 2.6), run("v", 3e-3, 1.0), run("v", 3e-3, None),
                               run("w", 1e-3, None), run("w", 3e-3, math.inf)])
    assert choice.chosen == {"v": 1e-3} and choice.means["v"][3e-3] is None
    assert choice.means["w"] == {1e-3: None, 3e-3: None}


def test_answer_loss_chooses_when_every_finished_trial_has_it():
    runs = [run("v", 1e-3, 2.0, answer=1.5), run("v", 3e-3, 2.5, answer=1.0)]
    assert lr_ladder.choose_lrs(runs).chosen == {"v": 3e-3} and lr_ladder.choose_lrs(runs).metric == "val/answer_loss"
    mixed = runs + [run("w", 1e-3, 2.0), run("w", 3e-3, 1.0)]
    assert lr_ladder.choose_lrs(mixed).metric == "val/loss" and lr_ladder.choose_lrs(mixed).chosen == {"v": 1e-3, "w": 3e-3}


# Loaded by every Python process of a sweep started with this folder on PYTHONPATH (Ray's workers inherit the
# driver's environment): each Tune trial thread ends 3 s after its function returned, as a thread whose
# thread-local state is slow to tear down would. Tune's worker reuse must wait for it.
SLOW_TRIAL_THREAD_EXIT = """
import threading, time

class _SlowTeardown:
    def __del__(self):
        time.sleep(3)

_local, _bootstrap = threading.local(), threading.Thread._bootstrap_inner

def _bootstrap_with_slow_exit(self):
    if type(self).__name__ == "RunnerThread":  # the thread Tune runs a function trainable in
        _local.state = _SlowTeardown()
    _bootstrap(self)

threading.Thread._bootstrap_inner = _bootstrap_with_slow_exit
"""


@pytest.mark.slow
def test_ladder_sweep_end_to_end_and_rerun(tmp_path, tiny_corpus, cache_dir):
    """Through Ray Tune and MLflow on SQLite: the ladder at every lr, the choice from the runs' final losses,
    the larger budget only at each variant's chosen lr; the same command again starts nothing new. One seed
    (about 50 s + 15 s for the rerun on 2 cores; the seed mean is checked by the tests above). Its Ray workers are
    reused (resources.reuse_workers): a process that trained one trial trains the next exactly as a fresh one,
    even when the trial's thread is slow to end (SLOW_TRIAL_THREAD_EXIT)."""
    from test_sweep_e2e import (assert_same_histories, finish, histories, runs_of, start_sweep, trainer_histories,
                                write_sweep)
    sweep = write_sweep(tmp_path, tiny_corpus, cache_dir, "ladder", baselines=["same_size"], budgets=[1.5e9, 2.5e9],
                        seeds=[0], max_concurrent=2, lr_ladder={"values": [3e-3, 3e-2]},
                        resources={"cpu": 1, "reuse_workers": True})
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_TRIAL_THREAD_EXIT)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    out = finish(start_sweep(sweep, tmp_path, env={"PYTHONPATH": path}))
    assert "6 finished, 0 failed" in out, out
    assert "Could not re-use actor" not in out, out
    client, parents, trials = runs_of(tmp_path, "ladder")
    [parent] = parents
    assert parent.info.status == "FINISHED" and len(trials) == 6
    for key, expected in trainer_histories(sweep).items():  # the 4 ladder trials, each trained alone
        assert_same_histories(histories(client, trials[key]), expected, key)
    pids = {json.loads(p.read_text().splitlines()[-1])["pid"]  # Tune's record of each trial's process
            for p in (tmp_path / "ray_results" / "ladder").glob("*/result.json")}
    assert len(pids) < 4, pids  # the 4 ladder trials ran in fewer processes: workers were reused
    ladder = [r for r in trials.values() if r.data.tags["loopmdm.budget_flops"] == "1.5e+09"]
    later = [r for r in trials.values() if r.data.tags["loopmdm.budget_flops"] == "2.5e+09"]
    cells = lambda runs: sorted((r.data.tags["loopmdm.label"], r.data.tags["loopmdm.lr"], r.data.tags["loopmdm.seed"])
                                for r in runs)
    assert cells(ladder) == sorted((label, lr, "0") for label in ("loop[1,2)x2", "same_size(3L)")
                                   for lr in ("0.003", "0.03"))

    # the choice, recomputed from the ladder runs' final val/loss: lowest seed mean, ties to the smaller lr
    means = {}
    for r in ladder:
        means.setdefault(r.data.tags["loopmdm.label"], {}).setdefault(float(r.data.params["train.lr"]), []).append(
            r.data.metrics["val/loss"])
    expected = {label: min((sum(v) / len(v), lr) for lr, v in row.items())[1] for label, row in means.items()}
    assert json.loads(parent.data.tags["loopmdm.lr_choice"]) == expected
    report = json.loads(Path(client.download_artifacts(parent.info.run_id, "lr_ladder.json", str(tmp_path)))
                        .read_text())
    assert report["metric"] == "val/loss" and report["budget_flops"] == 1.5e9
    for label, row in means.items():
        assert report["variants"][label]["mean_loss"] == {str(lr): pytest.approx(sum(v) / len(v))
                                                          for lr, v in row.items()}
    for r in ladder:
        is_chosen = float(r.data.params["train.lr"]) == expected[r.data.tags["loopmdm.label"]]
        assert r.data.tags["loopmdm.lr_ladder"] == ("chosen" if is_chosen else "candidate")
        assert r.info.run_name.endswith(f"-lr{float(r.data.params['train.lr']):g}")
    assert cells(later) == sorted((label, str(lr), "0") for label, lr in expected.items())
    assert all(r.data.tags["loopmdm.lr_ladder"] == "chosen" and r.info.status == "FINISHED" for r in later)
    assert (tmp_path / "ray_results" / "ladder").is_dir() and (tmp_path / "ray_results" / "ladder-stage2").is_dir()

    before = {key: (r.info.run_id, histories(client, r)) for key, r in trials.items()}
    out = finish(start_sweep(sweep, tmp_path))  # the same command again: both stages restored, nothing new
    assert "6 finished, 0 failed" in out, out
    client, parents, trials = runs_of(tmp_path, "ladder")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert json.loads(parents[0].data.tags["loopmdm.lr_choice"]) == expected
    assert {key: r.info.run_id for key, r in trials.items()} == {key: run_id for key, (run_id, _) in before.items()}
    for key, r in trials.items():
        h = histories(client, r)
        assert h == before[key][1], key  # no step logged twice, no new value
        assert all(len({s for s, _ in points}) == len(points) for points in h.values())
