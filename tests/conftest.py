import json
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs as one process per core (pyproject's -n 2): a second thread pool per process would only
    # oversubscribe the cores. Measured on the 2-core CPU, test_phop_is_learnable_on_a_cpu alone: 33 s wall for
    # 52 CPU-s with 2 threads, 38 s for 37 CPU-s with 1; beside the other worker the single thread wins.
    # Subprocesses (the CLI, sweep drivers) inherit it; sweep trials set their own count from resources.cpu.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)

from loopmdm_core.config import load_run_config  # noqa: E402

WORDS = ("the king queen lord shall love death night day sword crown heart blood fair speak hath thou thee "
         "my your and of to a in is not with be this that for me what but so").split()


def make_documents(n_docs: int, words_per_doc: int, seed: int = 0) -> list[str]:
    """Text from a Markov chain in which each word has two possible successors: context predicts a lot, so a
    model that learns anything beats the unigram reference quickly."""
    rng = random.Random(seed)
    successors = {w: (WORDS[(i * 7 + 1) % len(WORDS)], WORDS[(i * 11 + 3) % len(WORDS)]) for i, w in enumerate(WORDS)}
    docs = []
    for _ in range(n_docs):
        word, words = rng.choice(WORDS), []
        for _ in range(words_per_doc):
            words.append(word)
            word = successors[word][rng.random() < 0.5]
        docs.append(" ".join(words) + ".")
    return docs


# The files that take longest, longest first (seconds summed over their tests on the 2-core CPU: 245, 216, 134, 82,
# 72, 70, 58). pytest-xdist's --dist loadfile hands out whole files, and a run lasts until the worker holding the
# last long file finishes it, so they start first and the short files fill in at the end. pyproject passes
# --no-loadscope-reorder: by default xdist orders files by how many tests they hold, which put these (2-3 tests
# each) last.
LONGEST_FIRST = ("test_faults_e2e.py", "test_tracking_server.py", "test_sweep_e2e.py", "test_cluster.py",
                 "test_lr_ladder.py", "test_report.py", "test_tracking_faults.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: every file's own order kept


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    """A small jsonl corpus (24 documents of ~400 words): enough rows for tiny models, built in a second."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_documents(24, 400)))
    return str(path)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_config(tiny_corpus, cache_dir):
    """Factory of tiny run configs (2-3 layers, width 32) on the tiny corpus; keyword dicts update sections."""
    def make(model=None, data=None, train=None, eval=None):
        return load_run_config({
            "model": {"n_layers": 3, "d_model": 32, "n_heads": 2, "loop_start": 1, "loop_end": 2, "n_loops": 2,
                      **(model or {})},
            "data": {"corpus": tiny_corpus, "bpe_vocab_size": 320, "seq_len": 32, "cache_dir": cache_dir,
                     "val_fraction": 0.2, **(data or {})},
            "train": {"budget_flops": 3e9, "batch_size": 8, "lr": 3e-3, "log_every": 2, **(train or {})},
            "eval": {"fractions": [0.5, 1.0], "n_batches": 2, "batch_size": 4, "n_t": 4, **(eval or {})},
        })
    return make


def start_mlflow_server(db_path, port: int | None = None):
    """A real `mlflow server` on 127.0.0.1 over the SQLite file `db_path`; returns (process, uri) once it
    answers /health. Stop it with os.killpg(process.pid, SIGTERM)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{db_path}", "--workers", "1"],
                              cwd=db_path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2).read()
            return server, uri
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
            time.sleep(0.5)


class Recorder:
    """A trainer sink that keeps each step's metrics, wall-clock ones left out (they differ run to run), and
    raises KeyboardInterrupt at `stop_at`: what a killed run looks like from inside, it stops mid-loop."""

    def __init__(self, stop_at=None):
        self.rows, self.stop_at = {}, stop_at

    def __call__(self, step, values):
        from loopmdm_core import metrics
        if step == self.stop_at:
            raise KeyboardInterrupt
        wall_clock = (metrics.TOKENS_PER_S, metrics.MFU, metrics.MFU_RUN, metrics.TRAIN_SECONDS,
                      *metrics.PHASE_SECONDS.values())
        self.rows[step] = {k: v for k, v in values.items() if k not in wall_clock}
