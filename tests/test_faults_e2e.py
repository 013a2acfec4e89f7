"""Kill anywhere, for real: failpoints (loopmdm_core/failpoints.py) SIGKILL the whole sweep at trial start,
mid-step, while a checkpoint is written, while metrics are sent to MLflow and after a trial has finished; the same
command then resumes it, and it must end exactly like an uninterrupted run. A trial process killed alone (as by
the OS) is retried by Ray Tune from its last checkpoint within the same sweep.

Both tests end equal to one uninterrupted reference: what the trainer logs for the same trials, run alone in this
process (trainer_histories). The sweep kills are one chain in one folder: each launch is killed at its point, the
next launch resumes from what the kill left (and is killed at the next point), the last one finishes; a resume
that lost, duplicated or corrupted anything at any point leaves a difference from the reference at the end (or a
failing launch). Two trials one at a time: loop[1,2)x2 (45 steps) then same_size(3L) (57 steps), a checkpoint
every 4 steps."""

import signal

import pytest

from orchestrator import tracking
from test_sweep_e2e import assert_same_sweep, finish, runs_of, start_sweep, trainer_histories, write_sweep

pytestmark = pytest.mark.slow

# (failpoint[:N-th time in a trial process], what it interrupts), in the order the chain meets them. Where the
# first trial stands when each fires: not started; step 10 of 45 from scratch (checkpoint 8 kept); the second
# checkpoint write after resuming from 8 (the one of step 16: 12 kept); the second metric batch after resuming
# from 12; step 40 of the launch that resumes it with at most 33 steps to go, so in the second trial, after the
# first one finished.
KILL_POINTS = [("trial_start", "a trial's start"), ("step:10", "a training step"),
               ("checkpoint_write:2", "a checkpoint write"), ("mlflow_log:2", "a metric batch being sent"),
               ("step:40", "the second trial, after the first finished")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_corpus, cache_dir):
    return trainer_histories(sweep_file(tmp_path_factory.mktemp("reference"), tiny_corpus, cache_dir))


def sweep_file(folder, tiny_corpus, cache_dir, **extra):
    return write_sweep(folder, tiny_corpus, cache_dir, "faults", baselines=["same_size"], budgets=[6e9], **extra)


def run_with_fault(folder, sweep, fault: str, kill: str, marker):
    env = {"LOOPMDM_FAULT": fault, "LOOPMDM_FAULT_KILL": kill, "LOOPMDM_FAULT_MARKER": str(marker)}
    proc = start_sweep(sweep, folder, env=env)
    out, _ = proc.communicate(timeout=400)
    return proc.returncode, out


def test_sweep_killed_anywhere_resumes_to_the_same_result(reference, tmp_path, tiny_corpus, cache_dir):
    sweep = sweep_file(tmp_path, tiny_corpus, cache_dir)
    for i, (fault, where) in enumerate(KILL_POINTS):
        marker = tmp_path / f"fired-{i}"
        code, out = run_with_fault(tmp_path, sweep, fault, "sweep", marker)
        assert marker.exists(), f"failpoint {fault} ({where}) never fired:\n{out[-2000:]}"
        assert code == -signal.SIGKILL, (fault, code, out[-2000:])  # the driver died at {where}
    # the last kill came after a finished trial: the resume below must not train or log it again
    _, _, trials = runs_of(tmp_path, "faults")
    assert sorted(r.info.status for r in trials.values()) == ["FINISHED", "RUNNING"], trials
    # Ctrl-C on the driver as the resumed trial takes its first step: a clean stop, the run KILLED with how to
    # resume it, the sweep's parent FAILED saying it was interrupted
    code, out = run_with_fault(tmp_path, sweep, "step:1", "interrupt", tmp_path / "fired-interrupt")
    assert code == 1 and "0 failed, 1 interrupted" in out, out[-3000:]
    _, parents, trials = runs_of(tmp_path, "faults")
    assert sorted(r.info.status for r in trials.values()) == ["FINISHED", "KILLED"], trials
    error = parents[0].data.tags[tracking.ERROR_TAG]
    assert parents[0].info.status == "FAILED" and "1 interrupted" in error and "driver stopped" not in error
    out = finish(start_sweep(sweep, tmp_path))
    assert "2 finished, 0 failed" in out, out
    assert "s of it before this invocation)" in out  # wall/train counts the wall of every invocation
    assert "1 at a time: wall / (training / 1) = " in out  # max_concurrent: 1
    assert_same_sweep(reference, tmp_path, "faults")
    _, parents, _ = runs_of(tmp_path, "faults")
    assert tracking.ERROR_TAG not in parents[0].data.tags  # the interruption's note is gone once resumed


def test_trial_process_killed_is_retried_from_its_checkpoint(reference, tmp_path, tiny_corpus, cache_dir):
    sweep = sweep_file(tmp_path, tiny_corpus, cache_dir, max_failures=2)
    code, out = run_with_fault(tmp_path, sweep, "step:10", "worker", tmp_path / "fired")
    assert (tmp_path / "fired").exists() and code == 0, out[-3000:]
    assert "2 finished, 0 failed" in out, out
    assert_same_sweep(reference, tmp_path, "faults")
    # the retry is not hidden by the trial's finishing: the closing summary names it, its run counts it
    _, _, trials = runs_of(tmp_path, "faults")
    retried = {r.info.run_name: r.data.tags.get(tracking.RETRIES_TAG) for r in trials.values()}
    assert retried == {"same_size(3L)-b6e+09-s0": "1", "loop[1,2)x2-b6e+09-s0": None}, retried  # longest first
    assert "RETRIED same_size(3L)-b6e+09-s0 1x, after: " in out, out[-3000:]
    killed = next(r for r in trials.values() if r.data.tags.get(tracking.RETRIES_TAG))
    assert "worker process has died" in killed.data.tags[tracking.RETRY_ERRORS_TAG]  # why, from Tune's error file
