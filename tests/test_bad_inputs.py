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


# (the sweep file's text, a fragment the one error message must contain). What the driver makes of a bad file:
# one "error: " message, exit 2, nothing created. The many ways a sweep's fields can be wrong are
# tests/test_spec.py's (sweep fields, through spec.parse), test_config.py's (run config fields, base: is one) and
# test_lr_ladder.py's (lr_ladder:); here, those no other test gives, and the file-level ones.
SWEEP_CASES = [
    (with_change("budgets", ["1e12x"]), "budgets[0]: expected a number"),
    (with_change("seeds", []), "seeds: empty"),
    (with_change("base.data.bpe_vocab_size", 100), "data.bpe_vocab_size: must be in (256"),
    (with_change("base.data.corpus", "builtin:poems"), "unknown built-in corpus 'poems'"),
    (with_change("loops", {"loop_start": [-1], "loop_end": [2], "n_loops": [2]}), "loop_start"),
    (with_change("base.train.device", "cuda"), "train.device"),
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


# Command lines of `python -m loopmdm_core`: (argv, fragment of the message). test_cli.py runs one as a real
# process; test_messages.py has `sample` on a missing folder and `train` on a missing corpus.
CLI_CASES = [
    (["train", "--set", "model.n_loops=0"], "model.n_loops: must be >= 1"),
    (["train", "--set", "model.loop_end=9"], "model.loop_start/loop_end"),
    (["train", "--set", "model.n_loop=3"], "model.n_loop: unknown key; did you mean 'model.n_loops'?"),
    (["train", "--set", "train.budget_flops=-5"], "train.budget_flops: must be > 0"),
    (["train", "--set", "train.budget_flops=1000"], "train.budget_flops"),
    (["train", "--set", "nonsense"], "expected dotted.key=value"),
    (["train", "--set", "data.task=arithmetic:0"], "data.task"),
    (["train", "--set", "train.device=cuda:7"], "train.device"),
    (["train", "--config", "/no/such/config.yaml"], "config file not found"),
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


def driver_sweep(text: str, corpus: str, cache_dir: str) -> str:
    data = yaml.safe_load(text)
    data["base"]["data"].setdefault("corpus", corpus)
    data["base"]["data"]["cache_dir"] = cache_dir
    return yaml.safe_dump(data)


def test_driver_level_problems_fail_before_any_run(tmp_path, tiny_corpus, cache_dir, monkeypatch, capsys):
    """What only the driver can check, after the store is open and before any run: the corpus, the task rows and
    the tracking server, through run_sweep.main here (the process exit is test_cluster_resources' check)."""
    small = tmp_path / "small.jsonl"  # a few rows of 32 tokens: fewer than one batch of 8
    small.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_documents(3, 60)))
    cases = [
        (with_change("base.data.corpus", str(small)), "fewer than one batch"),
        (with_change("base.data", {"task": "arithmetic:4", "task_problems": 50, "seq_len": 8}),
         "data.seq_len: a task problem takes"),
        (with_change("tracking", {"uri": "http://127.0.0.1:9"}), "unreachable"),
    ]
    for i, (text, message) in enumerate(cases):
        cwd = tmp_path / f"case{i}"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        (cwd / "sweep.yaml").write_text(driver_sweep(text, tiny_corpus, cache_dir))
        assert run_sweep.main(["sweep.yaml", "-q"]) == 2, message
        err = capsys.readouterr().err  # the store's creation is logged before it
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in err, (message, err)
        assert no_runs_in(cwd) and not (cwd / "ray_results").exists(), message


@pytest.mark.slow
def test_cluster_resources_no_node_has_fail_before_any_run(tmp_path, tiny_corpus, cache_dir):
    """A trial no node of the Ray cluster can hold would wait forever: run_sweep.py, as users run it, starts Ray,
    says so for every resource that does not fit (this CPU-only machine has no GPU, nor 4096 CPUs) and exits 2
    with nothing logged."""
    out = run_driver(driver_sweep(with_change("resources", {"cpu": 4096, "gpu": 1}), tiny_corpus, cache_dir),
                     tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    errors = out.stderr[out.stderr.index("error: "):].splitlines()
    assert len(errors) == 2, out.stderr
    assert "resources.cpu: a trial asks for 4096 CPUs" in errors[0]
    assert "resources.gpu: a trial asks for 1 GPU" in errors[1]
    assert no_runs_in(tmp_path)
