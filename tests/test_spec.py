import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loopmdm_core import flops
from loopmdm_core.errors import ConfigError
from orchestrator import spec as specs
from orchestrator import trials as trials_of

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": {"n_layers": 4, "d_model": 64, "n_heads": 4}, "train": {"batch_size": 8}}


def sweep(**overrides):
    data = {"name": "t", "base": BASE, "loops": {"loop_start": [1], "loop_end": [3], "n_loops": [2, 3]},
            "baselines": ["same_size", "depth_matched"], "budgets": [1e12, 2e12], "seeds": [0, 1]}
    data.update(overrides)
    return specs.parse(data)


def test_expansion_groups_each_loop_with_its_baselines():
    trials = trials_of.expand(sweep())
    # per (budget, seed): 2 loops + 1 shared same_size + 2 depth_matched (6 and 8 layers)
    assert len(trials) == 2 * 2 * 5
    assert len({t.key for t in trials}) == len(trials)
    by_group = {}
    for t in trials:
        by_group.setdefault(t.group, []).append(t)
    assert len(by_group) == 4
    for members in by_group.values():
        assert {t.budget_flops for t in members} == {members[0].budget_flops}
        assert {t.seed for t in members} == {members[0].seed}
        labels = sorted(t.label for t in members)
        assert labels == ["depth_matched(6L)", "depth_matched(8L)", "loop[1,3)x2", "loop[1,3)x3", "same_size(4L)"]
        loops = [t for t in members if t.variant == "loop"]
        same = next(t for t in members if t.variant == "same_size")
        for loop in loops:
            deep = next(t for t in members if t.label == f"depth_matched({loop.config.model.applied_layers()}L)")
            seq = loop.config.data.seq_len
            assert flops.forward_flops_per_token(deep.config.model, seq) == \
                flops.forward_flops_per_token(loop.config.model, seq)
            assert same.plan.params == loop.plan.params
            assert deep.plan.params > loop.plan.params
        assert all(t.config.train.budget_flops == t.budget_flops and t.config.train.seed == t.seed for t in members)


def test_shared_baselines_are_deduplicated():
    trials = trials_of.expand(sweep(loops=[{"loop_start": 1, "loop_end": 3, "n_loops": 3},
                                       {"loop_start": 0, "loop_end": 2, "n_loops": 3}], budgets=[1e12], seeds=[0]))
    # both loops unroll to 8 layers: one same_size and one depth_matched serve both
    assert sorted(t.label for t in trials) == ["depth_matched(8L)", "loop[0,2)x3", "loop[1,3)x3", "same_size(4L)"]


def test_trials_start_longest_first():
    trials = trials_of.expand(sweep())
    order = [(t.budget_flops, t.label) for t in trials_of.longest_first(trials)]
    # the larger budget first; within a budget the most steps first: same-size (4 layers), then 6 layers deep
    # (loop x 2 and its depth-matched baseline, with equal steps, in expansion order: seed by seed), then 8
    six, eight = ["loop[1,3)x2", "depth_matched(6L)"], ["loop[1,3)x3", "depth_matched(8L)"]
    per_budget = ["same_size(4L)"] * 2 + six * 2 + eight * 2  # 2 seeds
    assert order == [(b, label) for b in (2e12, 1e12) for label in per_budget]
    assert sorted(trials_of.longest_first(trials), key=trials.index) == trials  # a reordering, nothing lost


def test_trial_slots_count_what_each_node_holds():
    """The closing line's "N at a time": per node, as many trials as both its CPUs and its GPUs hold."""
    from orchestrator.sweep import trial_slots
    h200 = {"CPU": 16.0, "GPU": 1.0}
    assert trial_slots(specs.Resources(cpu=2, gpu=0.125), [h200]) == 8
    assert trial_slots(specs.Resources(cpu=2, gpu=0.2), [h200]) == 5
    assert trial_slots(specs.Resources(cpu=4, gpu=0.125), [h200]) == 4  # the CPUs bind first
    assert trial_slots(specs.Resources(cpu=1), [{"CPU": 2.0}]) == 2  # no GPU asked: the GPUs do not count
    assert trial_slots(specs.Resources(cpu=1), [{"CPU": 2.0}], max_concurrent=1) == 1
    # per node, never pooled: 8 CPUs + 2 GPUs hold 2 trials of 3 CPUs; 2 CPUs hold none, whatever their GPUs
    assert trial_slots(specs.Resources(cpu=3, gpu=1), [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 2.0, "GPU": 4.0}]) == 2


def test_sweep_mfu_is_every_trials_flops_over_wall_gpus_and_peak(tmp_path):
    """The closing summary's "GPU use": read back from what the trials logged (perf/mfu_run, perf/train_seconds),
    it must equal their training FLOPs / (wall x the GPUs the slots held x the peak), FLOPs known here."""
    from mlflow.tracking import MlflowClient
    from synthetic_sweep import make_sweep
    from loopmdm_core import metrics
    from loopmdm_core.device import mfu
    from orchestrator import sweep as sweeps
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = make_sweep(uri, "s", budgets=(1e12,), seeds=(0,))
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("s").experiment_id
    peak, workers, flops = 989e12, 2, []
    for i, run in enumerate(client.search_runs([exp_id], "tags.`loopmdm.role` = 'trial'")):
        seconds, trained = 10.0 * (i + 1), 3e15 * (i + 1)  # as a data-parallel trial on 2 GPUs logs them
        client.log_metric(run.info.run_id, metrics.TRAIN_SECONDS, seconds)
        client.log_metric(run.info.run_id, metrics.MFU_RUN, mfu(trained, seconds, peak, workers))
        flops.append(trained)
    assert len(flops) == 3
    gpus = sweeps.held_gpus(specs.Resources(cpu=2, gpu=2), [{"CPU": 16.0, "GPU": 8.0}], slots=3)
    outcome = sweeps.SweepOutcome(parent, uri, tmp_path, seconds=40.0, earlier_seconds=10.0, gpus=gpus,
                                  workers=workers)
    sweeps._reconcile(client, exp_id, parent, [], outcome)
    assert gpus == 6.0
    assert outcome.sweep_mfu == pytest.approx(sum(flops) / (50.0 * 6.0 * peak), rel=1e-9)
    # what the slots hold, never more than the nodes have; none on CPUs (and then no sweep MFU)
    h200 = {"CPU": 16.0, "GPU": 1.0}
    assert sweeps.held_gpus(specs.Resources(cpu=2, gpu=0.125), [h200], slots=8) == 1.0
    assert sweeps.held_gpus(specs.Resources(cpu=2, gpu=0.2), [h200], slots=5) == pytest.approx(1.0)
    assert sweeps.held_gpus(specs.Resources(cpu=1, gpu=1), [h200], slots=3) == 1.0
    assert sweeps.held_gpus(specs.Resources(cpu=1), [{"CPU": 2.0}], slots=2) == 0.0
    assert sweeps.SweepOutcome(parent, uri, tmp_path, seconds=40.0, peak_seconds=1.0).sweep_mfu is None


def test_the_closing_count_takes_a_finished_run_over_tunes_stale_result(tmp_path):
    """A trial whose MLflow run is FINISHED counts as finished even when Tune's restored result for it is not
    `done` (seen on a resumed LR ladder); a run left RUNNING is interrupted, a trial with no run too."""
    from mlflow.tracking import MlflowClient
    from synthetic_sweep import make_sweep
    from orchestrator import sweep as sweeps
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = make_sweep(uri, "s", budgets=(1e12,), seeds=(0,))
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("s").experiment_id
    runs = client.search_runs([exp_id], "tags.`loopmdm.role` = 'trial'")
    names = sorted(r.info.run_name for r in runs)
    assert len(names) == 3
    running, done, stale = (r.info.run_name for r in runs)
    client.update_run(runs[0].info.run_id, status="RUNNING")
    outcome = sweeps.SweepOutcome(parent, uri, tmp_path, finished=[done])  # what Tune's results said
    sweeps._reconcile(client, exp_id, parent, names + ["never-started"], outcome)
    assert sorted(outcome.finished) == sorted([done, stale])
    assert sorted(outcome.interrupted) == sorted([running, "never-started"])


def test_a_retry_is_named_by_its_newest_failure(tmp_path):
    """What a RETRIED line says: the newest failure of Tune's error file, as its exception's line."""
    from orchestrator.tune_runner import _last_error
    errors = tmp_path / "error.txt"
    errors.write_text("Failure # 1 (occurred at 2026-12-02_16-27-31)\nThe actor died unexpectedly before finishing "
                      "this task.\n\tpid: 8661\nThe actor is dead because its worker process has died.\n"
                      "Failure # 2 (occurred at 2026-12-02_16-29-02)\nray::ImplicitFunc.train() (pid=9104)\n"
                      "Traceback (most recent call last):\n  File \"trainable.py\", line 3, in run_trial\n"
                      "    raise ValueError('boom')\nValueError: boom\n\n")
    assert _last_error(errors) == "ValueError: boom"
    assert _last_error(tmp_path / "absent.txt") == _last_error(None) == "no error recorded"


def test_a_retry_is_counted_on_the_run_the_trial_logs_to():
    """The RETRIED line and tag name the MLflow run: for an Optuna sample, the sample's own run, not its cell's."""
    from orchestrator.tune_runner import _run_name
    context = trials_of.SweepContext("sqlite:///x.db", "1", "p", 1.0, 1, "/tmp/c", None)
    job = trials_of.TrialJob.of(trials_of.expand(sweep())[0], context)
    assert _run_name({"trial": job.to_dict()}) == job.name
    sampled = _run_name({"trial": job.to_dict(), "search": {"train.lr": 0.003}})
    assert sampled == job.sampled({"train.lr": 0.003}).name and sampled.startswith(job.name + "-")


def test_trial_key_is_stable_and_tags_complete():
    a, b = trials_of.expand(sweep()), trials_of.expand(sweep())
    assert [t.key for t in a] == [t.key for t in b]
    assert set(a[0].tags) == {"loopmdm.role", "loopmdm.variant", "loopmdm.label", "loopmdm.group", "loopmdm.seed",
                              "loopmdm.budget_flops", "loopmdm.trial_key", "loopmdm.lr"}
    assert a[0].tags["loopmdm.lr"] == str(a[0].config.train.lr)
    assert a[0].name == "loop[1,3)x2-b1e+12-s0"  # no lr in the names of a sweep without an lr ladder


def test_sampled_loop_beside_fixed_one():
    trials = trials_of.expand(sweep(loops=[{"loop_start": 1, "loop_end": 3, "n_loops": 2},
                                       {"loop_start": 1, "loop_end": 3, "n_loops": 2, "loop_sampling": "uniform:1:4"},
                                       {"loop_start": 1, "loop_end": 3, "n_loops": 2,
                                        "loop_sampling": "poisson_lognormal:2.25:0.5", "loop_backprop": 2}],
                                budgets=[1e12], seeds=[0]))
    by_label = {t.label: t for t in trials}
    # one same_size serves all three; depth: 4 + 2 x (mean - 1) layers, rounded half up (2.5 -> 7, 2.25 -> 6.5 -> 7)
    assert list(by_label) == ["loop[1,3)x2", "same_size(4L)", "depth_matched(6L)", "loop[1,3)x2~uniform:1:4",
                              "depth_matched(7L)", "loop[1,3)x2~poisson_lognormal:2.25:0.5/bp2"]
    fixed, uniform = by_label["loop[1,3)x2"], by_label["loop[1,3)x2~uniform:1:4"]
    truncated = by_label["loop[1,3)x2~poisson_lognormal:2.25:0.5/bp2"]
    assert {t.variant for t in (fixed, uniform, truncated)} == {"loop"}
    assert (uniform.config.train.loop_sampling, uniform.config.train.loop_backprop) == ("uniform:1:4", 0)
    assert (truncated.config.train.loop_sampling, truncated.config.train.loop_backprop) == \
        ("poisson_lognormal:2.25:0.5", 2)
    assert uniform.config.model == fixed.config.model and uniform.config.model.n_loops == 2  # n_loops: the user's
    for t in trials:
        if t.variant != "loop":
            assert (t.config.train.loop_sampling, t.config.train.loop_backprop) == ("fixed", 0)
    assert (uniform.applied_layers, uniform.mean_loops) == (7, 2.5)
    assert (truncated.applied_layers, truncated.mean_loops) == (7, 2.25)
    assert (fixed.applied_layers, fixed.mean_loops) == (6, 2.0)
    assert by_label["depth_matched(7L)"].config.model.n_layers == 7
    assert uniform.derived["derived.applied_layers"] == 7 and uniform.derived["derived.mean_loops"] == 2.5
    assert uniform.derived["derived.flops_per_token"] == uniform.plan.flops_per_token  # the mean over its steps
    assert uniform.plan.flops_per_token > fixed.plan.flops_per_token  # 2.5 loops on average against 2


def test_loop_sampling_grid_axis():
    trials = trials_of.expand(sweep(loops={"loop_start": [1], "loop_end": [3], "n_loops": [2],
                                       "loop_sampling": ["fixed", "uniform:1:3"], "loop_backprop": [0, 1]},
                                baselines=["same_size"], budgets=[1e12], seeds=[0]))
    assert [t.label for t in trials] == ["loop[1,3)x2", "same_size(4L)", "loop[1,3)x2/bp1", "loop[1,3)x2~uniform:1:3",
                                         "loop[1,3)x2~uniform:1:3/bp1"]


BAD = [
    ({"nmae": "x"}, "nmae: unknown key; did you mean 'name'?"),
    ({"name": ""}, "name: missing"),
    ({"base": {"model": {"n_loop": 2}}}, "base.model.n_loop: unknown key; did you mean 'base.model.n_loops'?"),
    ({"base": {"model": {"d_model": 60, "n_heads": 8}}}, "base.model.d_model"),
    ({"base": {"model": {"n_layers": 4, "n_loops": 2}}}, "base.model.n_loops: set by the sweep's loops:"),
    ({"loops": {"loop_start": [1], "loop_end": [5], "n_loops": [2]}}, "loops (loop_start=1, loop_end=5, n_loops=2): model.loop_start/loop_end: the looped block [1, 5) must be a "
     "non-empty range inside [0, n_layers=4]"),
    ({"loops": {"loop_start": [3], "loop_end": [2], "n_loops": [2]}},
     "a grid combines every loop_start with every loop_end; list the valid combinations"),
    ({"loops": {"loop_start": [1], "loop_end": [3], "n_loops": [1]}}, "n_loops must be >= 2"),
    ({"loops": {"loop_start": [1], "loop_end": [3]}}, "loops: missing n_loops"),
    ({"loops": {"loop_start": [1], "loop_end": [3], "n_loops": []}}, "loops.n_loops: empty list"),
    ({"loops": [{"loop_start": 1, "loop_end": 3, "n_loops": 2, "depth": 1}]}, "loops[0].depth: unknown key"),
    ({"loops": [{"loop_start": 1, "loop_end": 3, "n_loops": 2},
                {"loop_start": 1, "loop_end": 3, "n_loops": 2, "loop_sampling": "gauss:2"}]},
     "loops[1].loop_sampling: 'gauss:2' is not one of fixed, uniform:LO:HI"),
    ({"loops": {"loop_start": [1], "loop_end": [3], "n_loops": [2], "loop_sampling": ["fixed", "uniform:3:1"]}},
     "loops.loop_sampling[1]: 'uniform:3:1' is not one of"),
    ({"loops": {"loop_start": [1], "loop_end": [3], "n_loops": [2], "loop_sampling": 3}},
     "loops.loop_sampling: expected a sampler"),
    ({"loops": [{"loop_start": 1, "loop_end": 3, "n_loops": 2, "loop_backprop": -1}]},
     "loops[0].loop_backprop: must be >= 0"),
    ({"base": {**BASE, "train": {"loop_sampling": "uniform:1:3"}}},
     "base.train.loop_sampling: set by the sweep's loops:, not by base; remove it (per looped variant"),
    ({"base": {**BASE, "train": {"loop_backprop": 2}}}, "base.train.loop_backprop: set by the sweep's loops:"),
    ({"base": {**BASE, "train": {"budget_flops": 1e12}}}, "base.train.budget_flops: set by the sweep's budgets:"),
    ({"base": {**BASE, "train": {"seed": 3}}}, "base.train.seed: set by the sweep's seeds:"),
    ({"loops": None}, "loops: missing"),
    ({"baselines": ["same_size", "bigger"]}, "baselines[1]: 'bigger' is not one of"),
    ({"budgets": []}, "budgets: missing"),
    ({"budgets": [1e12, -5]}, "budgets[1]: must be > 0"),
    ({"budgets": [10.0]}, "buys no step"),
    ({"seeds": ["one"]}, "seeds[0]: expected an integer"),
    ({"resources": {"cpu": 0, "gpu": 0}}, "resources: a trial needs some cpu or gpu"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu: above 1, ask for whole GPUs"),
    ({"resources": {"tpu": 1}}, "resources.tpu: unknown key"),
    ({"search": {"params": {"train.lrr": {"low": 1e-4, "high": 1e-2}}}}, "search.params.train.lrr: not a run config key"),
    ({"infer": {"max_loop": 4}}, "infer.max_loop: unknown key; did you mean 'infer.max_loops'?"),
    ({"infer": {"attention_t": 1.5}}, "infer: max_loops must be >= 0 and attention_t in [0, 1)"),
    ({"search": {"params": {"train.lr": {"distribution": "loguniform", "low": 0, "high": 1e-2}}}}, "loguniform needs low > 0"),
    ({"infer": {"task": {"problems": 10}}}, "infer.task.test: the base trains on no task"),
    ({"resources": {"cpu": 2, "workers": 3}}, "does not split over 3 data-parallel workers"),
    ({"resources": {"gpu": 2, "workers": 4}}, "resources.workers: 4 with gpu 2: one worker per GPU"),
    ({"infer": {"task": {"problems": 10, "test": "algebra"}}}, "infer.task.test: task 'algebra': expected arithmetic"),
    ({"infer": {"task": {"problems": 10, "test": "arithmetic", "schedules": ["fixed:2", "ramp:x"]}}},
     "infer.task.schedules[1]:"),
    ({"infer": {"task": {"problems": 10, "test": "arithmetic", "steps": 0}}}, "answer_tokens and steps >= 1"),
    ({"base": {**BASE, "data": {"task": "arithmetic:12"}}}, "data.task 'arithmetic:12'"),
    ({"base": {**BASE, "data": {"corpus": "none"}}}, "data.corpus: none needs data.task"),
    ({"base": {**BASE, "train": {"batch_size": 8, "device": "cuda"}}},
     "base.train.device: 'cuda' but resources.gpu is 0, so trials get no GPU; set resources.gpu or train.device: auto"),
    ({"base": {**BASE, "train": {"batch_size": 8, "compile": True, "cuda_graphs": True}}},
     "base.train.cuda_graphs: true but resources.gpu is 0"),
    ({"base": {**BASE, "train": {"batch_size": 8, "cuda_graphs": True}}, "resources": {"gpu": 1}},
     "base.train.cuda_graphs: needs train.compile: true"),
    ({"base": {**BASE, "train": {"batch_size": 8, "compile": True, "cuda_graphs": True}},
      "resources": {"gpu": 0.5, "reuse_workers": True}},
     "base.train.cuda_graphs: true with resources.reuse_workers: true"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_sweeps_name_the_yaml_path(change, message):
    with pytest.raises(ConfigError) as info:
        trials_of.expand(sweep(**change))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        sweep(nmae="x", budgets=[-1], seeds=["a"], loops={"loop_start": [1], "loop_end": [9], "n_loops": [1]})
    assert len(info.value.problems) >= 4


def test_shipped_sweeps_are_valid():
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        trials = trials_of.expand(specs.load(path))
        assert trials, path


def test_dry_run_prints_the_table_and_starts_nothing(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "dry", "base": BASE, "loops": {"loop_start": [1], "loop_end": [3],
                                    "n_loops": [2], "loop_sampling": ["fixed", "uniform:1:4"]}, "budgets": [1e12],
                                    "seeds": [0]}))
    out = subprocess.run([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), str(path), "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "5 trials" in out.stdout and "depth_matched(6L)" in out.stdout and "FLOPs/token" in out.stdout
    assert "depth_matched(7L)" in out.stdout and "uniform:1:4 (mean 2.5)" in out.stdout and "sampler" in out.stdout
    assert "rounded to the nearest layer (halves up)" in out.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase: {model: {n_layers: 2}}\nloops: {loop_start: [1], loop_end: [3], n_loops: [2]}\n"
                   "budgets: [1.0e12]\n")
    out = subprocess.run([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), str(bad)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "inside [0, n_layers=2]" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "mlflow.db").exists()
    # --resume with nothing to resume: one error before the store, the data or Ray is touched
    out = subprocess.run([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), str(path), "--resume"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "--resume:" in out.stderr and "holds no run of sweep 'dry'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "mlflow.db").exists()


def test_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "my.jsonl").write_text('{"text": "a"}\n')  # the corpus must exist to validate
    spec = sweep(base={**BASE, "data": {"corpus": "corpus/my.jsonl", "cache_dir": "cache"}})
    assert spec.base.data.corpus == str(tmp_path / "corpus" / "my.jsonl")
    assert spec.base.data.cache_dir == str(tmp_path / "cache")
    assert sweep().base.data.corpus == "builtin:shakespeare"
    spec = sweep(base={**BASE, "data": {"corpus": "none", "task": "gsm8k:train.jsonl"}},
                 infer={"task": {"problems": 5, "test": "gsm8k:~/test.jsonl"}})
    assert spec.base.data.corpus == "none" and spec.base.data.task == f"gsm8k:{tmp_path / 'train.jsonl'}"
    assert spec.infer.task.test == f"gsm8k:{Path.home() / 'test.jsonl'}"
