"""A real multi-node Ray cluster on this machine (two raylets, Ray's own `cluster_utils.Cluster`): a sweep submitted
to it with RAY_ADDRESS and with --address places trials on both nodes; a node removed ungracefully while it
trains a trial (its raylet and workers killed) costs nothing: the trial is retried on the surviving node from its
newest checkpoint and the sweep ends exactly like the uninterrupted one."""

import os
import time

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from test_sweep_e2e import (assert_same_sweep, finish, runs_of, start_sweep, store_created, sweep_histories,
                            write_sweep)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and one worker node, one CPU each: two one-CPU trials at a time, necessarily one on each node."""
    from ray.cluster_utils import Cluster
    spool = os.environ.get("LOOPMDM_SPOOL")
    os.environ["LOOPMDM_SPOOL"] = str(tmp_path_factory.mktemp("spool"))  # the raylets' workers inherit it
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c, worker
    c.shutdown()
    if spool is None:
        os.environ.pop("LOOPMDM_SPOOL")
    else:
        os.environ["LOOPMDM_SPOOL"] = spool


def sweep_file(folder, tiny_corpus, cache_dir):
    # ~120 steps a trial, a checkpoint every 4: long enough to lose a node after its first checkpoint.
    return write_sweep(folder, tiny_corpus, cache_dir, "cluster", baselines=["same_size"], budgets=[1.6e10],
                       max_concurrent=0, max_failures=2)


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory, tiny_corpus, cache_dir):
    """The sweep uninterrupted, submitted with RAY_ADDRESS."""
    c, worker = cluster
    folder = tmp_path_factory.mktemp("reference")
    out = finish(start_sweep(sweep_file(folder, tiny_corpus, cache_dir), folder, env={"RAY_ADDRESS": c.address}))
    assert "2 finished, 0 failed" in out, out
    return folder


def test_sweep_on_a_cluster_places_trials_on_both_nodes(cluster, reference):
    c, worker = cluster
    _, _, trials = runs_of(reference, "cluster")
    assert {r.data.tags[tracking.NODE_TAG] for r in trials.values()} == {c.head_node.node_id, worker.node_id}
    assert all(r.data.tags[tracking.RESUMED_FROM_TAG] == "0" for r in trials.values())


def test_node_lost_mid_trial_is_retried_from_its_checkpoint(cluster, reference, tmp_path, tiny_corpus, cache_dir):
    c, worker = cluster
    proc = start_sweep(sweep_file(tmp_path, tiny_corpus, cache_dir), tmp_path, "--address", c.address)
    victim = wait_for_checkpointed_trial_on(worker.node_id, tmp_path, proc)
    c.remove_node(worker, allow_graceful=False)  # raylet and its workers SIGKILLed, mid-trial
    out = finish(proc)
    assert proc.returncode == 0 and "2 finished, 0 failed" in out, out
    # one run per trial, every step once, the same values
    assert_same_sweep(sweep_histories(reference, "cluster"), tmp_path, "cluster")
    _, _, trials = runs_of(tmp_path, "cluster")
    moved = trials[victim]
    assert moved.data.tags[tracking.NODE_TAG] == c.head_node.node_id  # retried on the surviving node ...
    assert int(moved.data.tags[tracking.RESUMED_FROM_TAG]) > 0  # ... from its newest checkpoint, not step 0
    print(f"node lost: trial {victim} resumed at step {moved.data.tags[tracking.RESUMED_FROM_TAG]} of "
          f"{moved.data.params['derived.steps']} on the surviving node")  # shown with -s or -rP


def wait_for_checkpointed_trial_on(node_id: str, folder, proc, timeout: float = 300) -> str:
    """The key of a trial running on `node_id` once it has written a checkpoint (and is not done)."""
    db = folder / "mlflow.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if store_created(db, "cluster"):  # before that, opening it would race the driver's migration
            for run in trial_runs(db):
                if "derived.steps" not in run.data.params:  # just created: its params are being logged
                    continue
                key, steps = run.data.tags[tracking.TRIAL_KEY_TAG], int(run.data.params["derived.steps"])
                checkpoints = sorted((folder / "ray_results" / "cluster" / "checkpoints" / key).glob("step_*"))
                if run.data.tags.get(tracking.NODE_TAG) == node_id and checkpoints and \
                        int(checkpoints[-1].name[5:]) < steps // 2:
                    return key
        time.sleep(0.2)
    raise AssertionError("no trial checkpointed on the worker node in time")


def trial_runs(db) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("cluster")
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
