"""Tracking store trouble, injected for real: a tracking server that dies mid-run (metrics spooled to a local
file, replayed later without duplicates) and 8 processes writing to one SQLite store at once."""

import multiprocessing as mp
import os
import signal

import pytest
from mlflow.tracking import MlflowClient

from conftest import start_mlflow_server
from orchestrator import replay, tracking

pytestmark = pytest.mark.slow  # real mlflow servers and 8 writer processes
METRICS = ("flops", "train/loss", "lr")


def values(step: int) -> dict:
    return {"flops": step * 1e9, "train/loss": 10.0 / step, "lr": 1e-3}


def test_server_dropping_out_spools_metrics_and_replay_delivers_them_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPMDM_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # our own bounded retries only, in this test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    db = tmp_path / "server.db"
    server, uri = start_mlflow_server(db)
    port = int(uri.rsplit(":", 1)[1])
    try:
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("drop")).info.run_id
        logger = tracking.TrialLogger(uri, run_id, flush_seconds=1e9)
        for step in range(1, 11):
            logger(step, values(step))
        logger.flush()
        assert logger.spooled == 0
        os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-run
        server.wait(timeout=30)
        waits = []  # the retries' waits, recorded instead of slept
        with monkeypatch.context() as patched:
            patched.setattr(tracking.time, "sleep", waits.append)
            for step in range(11, 21):
                logger(step, values(step))
                if step % 5 == 0:
                    logger.flush()
            logger.finish("FINISHED")  # training goes on: both batches and the final status are spooled
        assert logger.spooled == 10 * len(METRICS)
        assert waits == [0.5, 1.0, 2.0]  # one round of retries for the outage, then one try per send
        spool = tmp_path / "spool" / f"{run_id}.jsonl"
        assert spool.exists()

        server, uri = start_mlflow_server(db, port)  # back up, same store
        # A resumed trial may have re-logged some spooled steps itself: replay must not duplicate them.
        MlflowClient(uri).log_metric(run_id, "flops", 11e9, step=11)
        assert replay.main(["--spool", str(tmp_path / "spool"), "--tracking-uri", uri]) == 0
        assert not spool.exists()
        client = MlflowClient(uri)
        for key in METRICS:
            steps = sorted(m.step for m in client.get_metric_history(run_id, key))
            assert steps == list(range(1, 21)), (key, steps)
        assert client.get_run(run_id).info.status == "FINISHED"
        assert replay.main(["--spool", str(tmp_path / "spool"), "--tracking-uri", uri]) == 0  # nothing left
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def _writer(uri: str, run_id: str, steps: int, spool: str):
    os.environ["LOOPMDM_SPOOL"] = spool
    logger = tracking.TrialLogger(uri, run_id, flush_seconds=0.0)  # a log_batch at every step: maximum contention
    for step in range(1, steps + 1):
        logger(step, values(step))
    logger.finish("FINISHED")
    assert logger.spooled == 0


def test_eight_concurrent_trials_on_the_sqlite_default(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.check_store(uri)
    exp = client.create_experiment("concurrent")
    run_ids = [client.create_run(exp).info.run_id for _ in range(8)]
    # Separate processes, as trials are; forked from a server that imported MLflow once (spawn would import it in
    # each of the 8, seconds of CPU apiece on a 2-core machine), none of them holding a store connection.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    procs = [ctx.Process(target=_writer, args=(uri, r, 60, str(tmp_path / "spool"))) for r in run_ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 8
    for run_id in run_ids:
        assert client.get_run(run_id).info.status == "FINISHED"
        for key in METRICS:
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, 61))
    assert not (tmp_path / "spool").exists()
