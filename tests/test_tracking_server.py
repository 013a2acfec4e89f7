"""A real tracking server on a real database: PostgreSQL (started here in a temporary folder on 127.0.0.1) behind
`mlflow server --app-name basic-auth`, credentials only in the environment. The server is stopped mid-sweep and
started again: no metric is lost or logged twice and every run ends with its right status. A wrong password is
one clear error before any trial starts."""

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from test_sweep_e2e import assert_same_histories, finish, histories, start_sweep, trainer_histories, write_sweep

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own on 127.0.0.1 (Debian's binaries; as the `postgres` user when run as root,
    since PostgreSQL refuses to run as root), with the two databases an MLflow server with basic auth needs."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if not initdb:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="loopmdm-pg-"))  # not under pytest's 0700 tmp: the postgres user reads it
    as_postgres = []
    if os.geteuid() == 0:
        import pwd
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(as_postgres + [initdb, "-D", str(folder / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run(as_postgres + [pg_ctl, "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "start", "-o",
                                  f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    import psycopg  # the driver SQLAlchemy 2.1 picks for postgresql:// URIs
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as con:
        con.execute("CREATE DATABASE mlflow")
        con.execute("CREATE DATABASE mlflow_auth")
    yield f"postgresql://postgres@127.0.0.1:{port}"
    subprocess.run(as_postgres + [pg_ctl, "-D", str(folder / "data"), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


class AuthServer:
    """`mlflow server --app-name basic-auth` on PostgreSQL, at a fixed port so it can be stopped and started again."""

    def __init__(self, db: str, folder: Path):
        self.port, self.folder = free_port(), folder
        self.admin_password = secrets.token_hex(8)
        (folder / "basic_auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {db}/mlflow_auth\nadmin_username = admin\nadmin_password = {self.admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        self.env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        self.command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                        "--backend-store-uri", f"{db}/mlflow", "--artifacts-destination", str(folder / "artifacts"),
                        "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.folder, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2).read()
                return
            except OSError:
                assert time.monotonic() < deadline and self.process.poll() is None, \
                    "mlflow server did not start:\n" + (self.folder / "server.log").read_text()[-3000:]
                time.sleep(0.5)

    def stop(self):
        os.killpg(self.process.pid, signal.SIGKILL)  # as a crash or a lost host: nothing flushed on the way out
        self.process.wait()


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    s = AuthServer(postgres, tmp_path_factory.mktemp("mlflow_server"))
    s.start()
    from mlflow.server.auth.client import AuthServiceClient
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=s.admin_password)
    try:
        s.alice = secrets.token_hex(8)
        AuthServiceClient(s.uri).create_user("alice", s.alice)
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    yield s
    s.stop()


def sweep_file(folder, tiny_corpus, cache_dir, name):
    # ~80 steps a trial, a checkpoint every 4, metrics every 2 steps: the outage falls among them.
    return write_sweep(folder, tiny_corpus, cache_dir, name, baselines=["same_size"], budgets=[1e10],
                       max_concurrent=0, resources={"cpu": 1}, max_failures=1)


def as_alice(server, spool: Path, password: str | None = None, **extra) -> dict:
    """The sweep's environment: alice's credentials and a spool folder of the test's own."""
    return {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": password or server.alice,
            "LOOPMDM_SPOOL": str(spool), **extra}


def test_wrong_password_is_one_clear_error_before_any_trial(server, tmp_path, tiny_corpus, cache_dir):
    sweep = sweep_file(tmp_path, tiny_corpus, cache_dir, "auth")
    proc = start_sweep(sweep, tmp_path, "--tracking-uri", server.uri,
                       env=as_alice(server, tmp_path / "spool", "wrong"))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused the credentials" in errors[0] and "MLFLOW_TRACKING_PASSWORD" in errors[0], out
    assert "wrong" not in out  # the password itself is never printed
    assert not (tmp_path / "ray_results").exists()  # stopped before Ray started, no trial ran


def test_server_restarted_mid_sweep_loses_and_duplicates_nothing(server, tmp_path, tiny_corpus, cache_dir):
    sweep = sweep_file(tmp_path, tiny_corpus, cache_dir, "outage")
    reference = trainer_histories(sweep)  # what the trainer logs for these trials, uninterrupted

    # MLflow's client would otherwise wait out the outage inside one request (up to minutes of retries) and the
    # trial with it; with its retries off, the trial's own (a few seconds) give up and its metrics are spooled.
    env = as_alice(server, tmp_path / "spool", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    proc = start_sweep(sweep, tmp_path, "--tracking-uri", server.uri, env=env)
    wait_until_a_trial_logs(server, proc)
    server.stop()
    time.sleep(12)  # longer than a trial's retries: what it logs meanwhile is spooled
    server.start()
    out = finish(proc)
    assert proc.returncode == 0 and "2 finished, 0 failed" in out, out
    assert "metrics the trials had spooled while the store was down were delivered" in out, out
    print(next(line for line in out.splitlines() if line.startswith("tracking: ")))  # shown with -s or -rP
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # all of it delivered

    os.environ.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=server.alice)
    try:
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "sweep"]
        got = {r.data.tags[tracking.TRIAL_KEY_TAG]: r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"}
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert got.keys() == reference.keys()  # one run per trial
        for key, run in got.items():  # every step once, with the uninterrupted run's values
            assert run.info.status == "FINISHED"
            assert_same_histories(histories(client, run), reference[key], key)
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]


def wait_until_a_trial_logs(server, proc, timeout: float = 300):
    """Until some trial run holds a `flops` metric (training has started and reached MLflow)."""
    os.environ.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=server.alice)
    try:
        client = MlflowClient(server.uri)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            exp = client.get_experiment_by_name("outage")
            if exp and any(tracking.STEP_METRIC in r.data.metrics for r in client.search_runs([exp.experiment_id])):
                return
            time.sleep(0.2)
        raise AssertionError("no trial logged a metric in time")
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
