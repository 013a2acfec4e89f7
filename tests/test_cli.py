"""The single-run CLI as users run it: a subprocess, exit codes, one-line errors, resume with the same --out."""

import json
import os
import subprocess
import sys

import pytest
import yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "loopmdm_core", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=300)


def write_config(tmp_path, cfg) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def test_dry_run_prints_the_plan():
    out = cli("train", "--dry-run", "--set", "model.n_loops=3")
    assert out.returncode == 0, out.stderr
    assert "loop [1, 3) x 3 (8 applied)" in out.stdout and "steps" in out.stdout


def test_user_error_is_one_clean_message_and_exit_2(tmp_path):
    """As a process: exit 2, the message on stderr, no traceback, no run folder. The other messages are checked
    in-process (test_bad_inputs.py's CLI_CASES)."""
    out = cli("train", "--set", f"data.corpus={tmp_path}/none.jsonl", "--out", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    assert "error: data.corpus:" in out.stderr and "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # nothing left behind by a run that could not start


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_corpus, cache_dir):
    """One `train` run for the module: (its config file, its --out folder, the process's result)."""
    from loopmdm_core.config import load_run_config
    folder = tmp_path_factory.mktemp("cli")
    cfg = load_run_config({
        "model": {"n_layers": 3, "d_model": 32, "n_heads": 2, "loop_start": 1, "loop_end": 2, "n_loops": 2},
        "data": {"corpus": tiny_corpus, "bpe_vocab_size": 320, "seq_len": 32, "cache_dir": cache_dir,
                 "val_fraction": 0.2},
        "train": {"budget_flops": 1.5e9, "batch_size": 8, "lr": 3e-3, "log_every": 2},
        "eval": {"fractions": [0.5, 1.0], "n_batches": 2, "batch_size": 4, "n_t": 4}})
    config = write_config(folder, cfg)
    return config, folder / "run", cli("train", "--config", config, "--out", str(folder / "run"), "-q")


@pytest.mark.slow
def test_train_then_resume_finished_run(trained_run):
    config, run, out = trained_run
    assert out.returncode == 0, out.stderr
    assert "validation:" in out.stdout and "unigram reference perplexity" in out.stdout
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["val/loss"] > 0 and len({x["step"] for x in lines}) == len(lines)
    again = cli("train", "--config", config, "--out", str(run), "-q")
    assert again.returncode == 0 and "resuming from step" in again.stdout
    assert (run / "metrics.jsonl").read_text().splitlines() == [json.dumps(x) for x in lines]  # nothing logged twice


@pytest.mark.slow
def test_sample_and_loops_on_a_trained_run(trained_run, tmp_path):
    _, run, trained = trained_run
    assert trained.returncode == 0, trained.stderr
    out = cli("sample", str(run), "--prompt", "the king", "--steps", "8", "-n", "2",
              "--schedule", "ramp:3:1", "--length", "16")
    assert out.returncode == 0, out.stderr
    samples = out.stdout.split("--- sample ")[1:]
    assert len(samples) == 2 and all(s.split("\n", 1)[1].startswith("the king") for s in samples)
    assert "network calls, loops per call: 3 " in out.stdout
    out = cli("loops", str(run), "--max-loops", "3")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and rows[1][-1] == "(trained)"
    bad = cli("sample", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "no such run folder" in bad.stderr and "Traceback" not in bad.stderr
