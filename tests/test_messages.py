"""Bad input gets one clear message naming the field and the fix (one test per message), and no number that
cannot be: MFU is at most 1 or not logged."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loopmdm_core import metrics
from loopmdm_core.cli import main as cli
from orchestrator import run_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("typo,meant", [("budget", "budgets"), ("seed", "seeds"), ("nmae", "name")])
def test_a_misspelled_top_level_key_is_the_only_problem(tmp_path, capsys, typo, meant):
    sweep = yaml.safe_load((ROOT / "sweeps" / "iso_flops.yaml").read_text())
    sweep[typo] = sweep.pop(meant)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert run_sweep.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {typo}: unknown key; did you mean '{meant}'?"]


def test_sample_names_a_run_folder_that_does_not_exist(tmp_path, capsys):
    assert cli(["sample", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: {tmp_path / 'nope'}: no such run folder; give the --out folder of a `train` run"


def test_train_dry_run_refuses_a_corpus_that_does_not_exist(tmp_path, capsys):
    assert cli(["train", "--dry-run", "--set", f"data.corpus={tmp_path / 'none.txt'}"]) == 2
    err = capsys.readouterr().err
    assert f"data.corpus: {tmp_path / 'none.txt'} does not exist" in err and "builtin:shakespeare" in err


def test_help_texts_are_whole_and_explain_every_option():
    top = subprocess.run([sys.executable, "-m", "loopmdm_core", "--help"], capture_output=True, text=True, cwd=ROOT)
    description = " ".join(top.stdout.split("positional arguments")[0].split()[3:])
    assert description.endswith("resumes.") and "train" in description and "sample" in description
    sample = subprocess.run([sys.executable, "-m", "loopmdm_core", "sample", "--help"], capture_output=True,
                            text=True, cwd=ROOT).stdout
    options = sample.split("options:")[1]
    for flag in ("--num-samples", "--method", "--temperature", "--seed", "--steps", "--schedule"):
        block = options.split(flag, 1)[1].split("\n  -")[0]
        assert len(block.split()) > 3, f"{flag} is not explained: {block!r}"


def test_mfu_is_never_above_one(tiny_config, caplog):
    """A CPU has no known peak: no MFU. A real peak gives MFU in (0, 1]. A peak below what the run reaches
    (1 FLOP/s) would give MFU far above 1: not logged, and a warning names train.peak_flops."""
    rows = []
    from loopmdm_core.train import train

    def short(**train_section):  # a few steps, throughput logged at each, one evaluation at the end
        return tiny_config(train={"budget_flops": 6e8, "log_every": 1, **train_section},
                           eval={"fractions": [1.0], "n_batches": 1})
    train(short(), sink=lambda step, values: rows.append(values))
    assert not any(metrics.MFU in r or metrics.MFU_RUN in r for r in rows)
    assert any(metrics.TOKENS_PER_S in r for r in rows)
    rows.clear()
    train(short(peak_flops=1e15), sink=lambda step, values: rows.append(values))
    logged = [r[metrics.MFU] for r in rows if metrics.MFU in r]
    assert logged and all(0 < m <= 1 for m in logged)
    [last] = [r for r in rows if metrics.MFU_RUN in r]  # once, with the last step: the whole run's FLOPs and time
    assert last is [r for r in rows if metrics.TRAIN_SECONDS in r][-1]
    assert last[metrics.MFU_RUN] == pytest.approx(last[metrics.FLOPS] / last[metrics.TRAIN_SECONDS] / 1e15)
    rows.clear()
    train(short(peak_flops=1.0), sink=lambda step, values: rows.append(values))
    assert not any(metrics.MFU in r or metrics.MFU_RUN in r for r in rows)
    assert "set train.peak_flops" in caplog.text


def test_report_reads_a_bare_database_path_as_sqlite_and_names_the_users_own_file(tmp_path, capsys, monkeypatch):
    from orchestrator import report
    monkeypatch.chdir(tmp_path)
    assert report.main(["--tracking-uri", "path/to/mlflow.db"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: no tracking database at sqlite:///{tmp_path}/path/to/"
                                               f"mlflow.db; run a sweep first or pass --tracking-uri")
    assert report.main(["--tracking-uri", "path/to/mlruns"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--tracking-uri sqlite:///{tmp_path}/path/to/mlruns/mlflow.db")
