"""Kill anywhere, for real: failpoints (loopmdm_core/failpoints.py) SIGKILL the whole sweep at trial start,
mid-step, while a checkpoint is written and while metrics are sent to MLflow; the same command then resumes it,
and it must end exactly like an uninterrupted sweep. A trial process killed alone (as by the OS) is retried by
Ray Tune from its last checkpoint within the same sweep."""

import signal

import pytest

from test_sweep_e2e import assert_same_sweep, finish, start_sweep, write_sweep

pytestmark = pytest.mark.slow

# (failpoint[:N-th time in a trial process], what it interrupts). ~45 steps a trial, a checkpoint every 4, two
# trials one at a time.
KILL_POINTS = [("trial_start", "a trial's start"), ("step:10", "a training step"),
               ("checkpoint_write:2", "a checkpoint write"), ("mlflow_log:2", "a metric batch being sent")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_corpus, cache_dir):
    folder = tmp_path_factory.mktemp("reference")
    out = finish(start_sweep(sweep_file(folder, tiny_corpus, cache_dir), folder))
    assert "2 finished, 0 failed" in out, out
    return folder


def sweep_file(folder, tiny_corpus, cache_dir, **extra):
    return write_sweep(folder, tiny_corpus, cache_dir, "faults", baselines=["same_size"], budgets=[6e9], **extra)


def run_with_fault(folder, sweep, fault: str, kill: str):
    env = {"LOOPMDM_FAULT": fault, "LOOPMDM_FAULT_KILL": kill, "LOOPMDM_FAULT_MARKER": str(folder / "fired")}
    proc = start_sweep(sweep, folder, env=env)
    out, _ = proc.communicate(timeout=400)
    return proc.returncode, out


@pytest.mark.parametrize("fault, where", KILL_POINTS, ids=[f for f, _ in KILL_POINTS])
def test_sweep_killed_anywhere_resumes_to_the_same_result(fault, where, reference, tmp_path, tiny_corpus, cache_dir):
    sweep = sweep_file(tmp_path, tiny_corpus, cache_dir)
    code, out = run_with_fault(tmp_path, sweep, fault, "sweep")
    assert (tmp_path / "fired").exists(), f"failpoint {fault} never fired:\n{out[-2000:]}"
    assert code == -signal.SIGKILL, (code, out[-2000:])  # the driver died at {where}
    out = finish(start_sweep(sweep, tmp_path))
    assert "2 finished, 0 failed" in out, out
    assert_same_sweep(reference, tmp_path, "faults")


def test_trial_process_killed_is_retried_from_its_checkpoint(reference, tmp_path, tiny_corpus, cache_dir):
    sweep = sweep_file(tmp_path, tiny_corpus, cache_dir, max_failures=2)
    code, out = run_with_fault(tmp_path, sweep, "step:10", "worker")
    assert (tmp_path / "fired").exists() and code == 0, out[-3000:]
    assert "2 finished, 0 failed" in out, out
    assert_same_sweep(reference, tmp_path, "faults")
