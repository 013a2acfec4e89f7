"""Bad input, the way users give it: malformed sweep files, run configs and command lines. Each must end in one
clear message naming the problem, exit 2, no traceback, and leave no MLflow run or Ray results behind.

Most cases fail in validation and run in-process; the ones only the driver can catch (the corpus, the tracking
store, the cluster's resources) run `run_sweep.py` as users do.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_documents
from loopmdm_core import cli
from orchestrator import run_sweep

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": {"n_layers": 3, "d_model": 32, "n_heads": 2},
        "data": {"bpe_vocab_size": 320, "seq_len": 32, "val_fraction": 0.2},
        "train": {"batch_size": 8},
        "eval": {"fractions": [1.0], "n_batches": 1, "batch_size": 4, "n_t": 2}}
GOOD = {"name": "bad", "base": BASE, "loops": {"loop_start": [1], "loop_end": [2], "n_loops": [2]},
        "budgets": [3e9], "seeds": [0], "resources": {"cpu": 1}}


def with_change(path: str, value):
    """GOOD with the dotted `path` set to `value` (a key that does not exist yet is added)."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    node = data
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return yaml.safe_dump(data)


# (the sweep file's text, a fragment the one error message must contain)
SWEEP_CASES = [
    (with_change("budgets", ["1e12x"]), "budgets[0]: expected a number"),
    (with_change("budgets", [-1e12]), "budgets[0]: must be > 0"),
    (with_change("budgets", []), "budgets: missing"),
    (with_change("budgets", [1.0]), "buys no step"),
    (with_change("seeds", ["zero"]), "seeds[0]: expected an integer"),
    (with_change("seeds", []), "seeds: empty"),
    (with_change("nmae", "x"), "nmae: unknown key; did you mean 'name'?"),
    (with_change("base.model.n_layrs", 3), "base.model.n_layrs: unknown key; did you mean 'base.model.n_layers'?"),
    (with_change("base.model.n_layers", "three"), "base.model.n_layers: expected an integer"),
    (with_change("base.model.d_model", 33), "base.model.d_model: 33 is not divisible"),
    (with_change("base.model.n_loops", 2), "base.model.n_loops: set by the sweep's loops:"),
    (with_change("base.train.lr", -1), "train.lr: must be > 0"),
    (with_change("base.train.schedule", "linear"), "train.schedule: 'linear' is not one of"),
    (with_change("base.train.compile", "yes"), "base.train.compile: expected true or false"),
    (with_change("base.data.tokenizer", "sentencepiece"), "data.tokenizer: 'sentencepiece' is not one of"),
    (with_change("base.data.bpe_vocab_size", 100), "data.bpe_vocab_size: must be in (256"),
    (with_change("base.data.task", "sudoku"), "data.task 'sudoku'"),
    (with_change("base.eval.fractions", [0]), "eval.fractions: need at least one value in (0, 1]"),
    (with_change("loops", {"loop_start": [1], "loop_end": [9], "n_loops": [2]}), "loop_end 9 > base.model.n_layers=3"),
    (with_change("loops", {"loop_start": [2], "loop_end": [1], "n_loops": [2]}), "empty loop"),
    (with_change("loops", {"loop_start": [1], "loop_end": [2], "n_loops": []}), "loops.n_loops: empty list"),
    (with_change("loops", {"loop_start": [1], "loop_end": [2], "n_loops": [1]}), "n_loops must be >= 2"),
    (with_change("loops", {"loop_start": [-1], "loop_end": [2], "n_loops": [2]}), "loop_start"),
    (with_change("loops", [{"loop_start": 1, "loop_end": 2, "n_loops": 2, "loop_sampling": "uniform:0:3"}]),
     "loops[0].loop_sampling: 'uniform:0:3' is not one of"),
    (with_change("loops", [{"loop_start": 1, "loop_end": 2, "n_loops": 2, "loop_backprop": -2}]),
     "loops[0].loop_backprop: must be >= 0"),
    (with_change("base.train.loop_sampling", "uniform:1:3"), "base.train.loop_sampling: set by the sweep's loops:"),
    (with_change("base.train.budget_flops", 3e9), "base.train.budget_flops: set by the sweep's budgets:"),
    (with_change("base.train.seed", 1), "base.train.seed: set by the sweep's seeds:"),
    (with_change("lr_ladder", {"values": [1e-3]}), "lr_ladder.values: give at least two learning rates"),
    (with_change("lr_ladder", {"values": [1e-3, 3e-3], "budget": 1}), "lr_ladder.budget: unknown key"),
    (with_change("baselines", ["bigger"]), "baselines[0]: 'bigger' is not one of"),
    (with_change("resources", {"cpu": 0, "gpu": 0}), "resources: a trial needs some cpu or gpu"),
    (with_change("resources", {"gpu": 1.5}), "resources.gpu: above 1, ask for whole GPUs"),
    (with_change("resources", {"cpu": 1, "workers": 3}), "does not split over 3 data-parallel workers"),
    (with_change("base.train.device", "cuda"), "train.device"),
    (with_change("infer", {"task": {"problems": 5}}), "infer.task.test: the base trains on no task"),
    (with_change("infer", {"task": {"problems": 5, "test": "arithmetic", "schedules": ["fast"]}}),
     "infer.task.schedules[0]"),
    (with_change("search", {"params": {"train.lr": {"distribution": "normal", "low": 1, "high": 2}}}),
     "search.params.train.lr"),
    (with_change("tracking", {"uri": "http://alice:s3cret@127.0.0.1:5000"}),
     "tracking URI http://alice:***@127.0.0.1:5000 holds a password"),
    ("name: [unclosed\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping at the top level"),
    ("", "name"),
]


@pytest.mark.parametrize("text, message", SWEEP_CASES, ids=[m[:45] for _, m in SWEEP_CASES])
def test_bad_sweep_file_is_one_clear_error_before_anything_starts(text, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    assert run_sweep.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err and "s3cret" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_non_utf8_and_missing_sweep_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    for argv, message in (([str(tmp_path / "latin1.yaml")], "not UTF-8 text"),
                          ([str(tmp_path / "nope.yaml")], "config file not found")):
        assert run_sweep.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "mlflow.db").exists()


# Command lines of `python -m loopmdm_core`: (argv, fragment of the message)
CLI_CASES = [
    (["train", "--set", "model.n_loops=0"], "model.n_loops: must be >= 1"),
    (["train", "--set", "model.loop_end=9"], "model.loop_start/loop_end"),
    (["train", "--set", "train.budget_flops=-5"], "train.budget_flops: must be > 0"),
    (["train", "--set", "nonsense"], "expected dotted.key=value"),
    (["train", "--set", "model.depth=3"], "model.depth: unknown key"),
    (["train", "--set", "data.corpus=/no/such/corpus.jsonl"], "does not exist"),
    (["train", "--set", "data.task=arithmetic:0"], "data.task"),
    (["train", "--set", "train.device=cuda:7"], "train.device"),
    (["train", "--config", "/no/such/config.yaml"], "config file not found"),
    (["sample", "/no/such/run"], "no such run folder"),
    (["loops", "/no/such/run"], "no such run folder"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[m[:40] for _, m in CLI_CASES])
def test_bad_cli_invocations(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not any(tmp_path.rglob("step_*")), "a checkpoint was written"


def run_driver(sweep_text: str, cwd: Path, *args, env=None):
    (cwd / "sweep.yaml").write_text(sweep_text)
    return subprocess.run([sys.executable, str(ROOT / "orchestrator" / "run_sweep.py"), "sweep.yaml", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})})


def no_runs_in(cwd: Path) -> bool:
    """No MLflow run in the store the driver would have used (an empty store file may exist)."""
    db = cwd / "mlflow.db"
    if not db.exists():
        return True
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{db}")
    return not any(client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_driver_level_problems_fail_before_any_run(tmp_path, tiny_corpus, cache_dir):
    """What only the driver can check: the corpus, the tracking store and the cluster's resources."""
    small = tmp_path / "small.jsonl"  # a few rows of 32 tokens: fewer than one batch of 8
    small.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_documents(3, 60)))
    cases = [
        (with_change("base.data.corpus", str(tmp_path / "missing.jsonl")), (), "does not exist"),
        (with_change("base.data.corpus", str(small)), (), "fewer than one batch"),
        (with_change("base.data.corpus", "builtin:poems"), (), "unknown built-in corpus 'poems'"),
        (with_change("base.data", {"task": "arithmetic:4", "task_problems": 50, "seq_len": 8}), (),
         "data.seq_len: a task problem takes"),
        (with_change("tracking", {"uri": "http://127.0.0.1:9"}), (), "unreachable"),
        (with_change("resources", {"cpu": 1, "gpu": 1}), (), "resources.gpu: a trial asks for 1 GPU"),
        (with_change("resources", {"cpu": 4096}), (), "resources.cpu: a trial asks for 4096 CPU"),
    ]
    for i, (text, args, message) in enumerate(cases):
        cwd = tmp_path / f"case{i}"
        cwd.mkdir()
        data = yaml.safe_load(text)
        data["base"]["data"].setdefault("corpus", tiny_corpus)
        data["base"]["data"]["cache_dir"] = cache_dir
        out = run_driver(yaml.safe_dump(data), cwd, *args)
        assert out.returncode == 2, (message, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (message, out.stderr)
        assert no_runs_in(cwd), message
