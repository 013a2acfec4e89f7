"""The single-run CLI as users run it: a subprocess, exit codes, one-line errors, resume with the same --out."""

import json
import os
import subprocess
import sys

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


def test_user_errors_are_one_clean_message(tmp_path):
    cases = [
        (["--set", "model.n_loop=3"], "model.n_loop: unknown key; did you mean 'model.n_loops'?"),
        (["--set", "model.loop_end=9"], "model.loop_start/loop_end"),
        (["--set", "train.budget_flops=1000"], "train.budget_flops"),
        (["--config", str(tmp_path / "missing.yaml")], "config file not found"),
        (["--set", f"data.corpus={tmp_path}/none.jsonl", "--out", str(tmp_path / "r")], "does not exist"),
    ]
    for args, message in cases:
        out = cli("train", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (tmp_path / "r").exists()  # nothing left behind by a run that could not start


def test_train_then_resume_finished_run(tiny_config, tmp_path):
    config = write_config(tmp_path, tiny_config(train={"budget_flops": 1.5e9}))
    out = cli("train", "--config", config, "--out", str(tmp_path / "run"), "-q")
    assert out.returncode == 0, out.stderr
    assert "validation:" in out.stdout and "unigram reference perplexity" in out.stdout
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["val/loss"] > 0 and len({x["step"] for x in lines}) == len(lines)
    again = cli("train", "--config", config, "--out", str(tmp_path / "run"), "-q")
    assert again.returncode == 0 and "resuming from step" in again.stdout
    assert (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() == \
        [json.dumps(x) for x in lines]  # nothing logged twice


def test_sample_and_loops_on_a_trained_run(tiny_config, tmp_path):
    config = write_config(tmp_path, tiny_config(train={"budget_flops": 1.5e9}))
    assert cli("train", "--config", config, "--out", str(tmp_path / "run"), "-q").returncode == 0
    out = cli("sample", str(tmp_path / "run"), "--prompt", "the king", "--steps", "8", "-n", "2",
              "--schedule", "ramp:3:1", "--length", "16")
    assert out.returncode == 0, out.stderr
    samples = out.stdout.split("--- sample ")[1:]
    assert len(samples) == 2 and all(s.split("\n", 1)[1].startswith("the king") for s in samples)
    assert "network calls, loops per call [3," in out.stdout
    out = cli("loops", str(tmp_path / "run"), "--max-loops", "3")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and rows[1][-1] == "(trained)"
    bad = cli("sample", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "no such run folder" in bad.stderr and "Traceback" not in bad.stderr
