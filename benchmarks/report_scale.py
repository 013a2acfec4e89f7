"""Wall time of orchestrator/report.py on a store with many runs (default 200), written synthetically.

python benchmarks/report_scale.py [--runs 200]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # a checkout without an install; the known-answer sweeps

from orchestrator import report, tracking  # noqa: E402
from synthetic_sweep import make_sweep  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.check_store(uri)
    per_copy = 2 * 2 * 3  # budgets x seeds x (same_size, loop, depth_matched)
    copies = -(-args.runs // per_copy)  # at least --runs
    start = time.perf_counter()
    make_sweep(uri, "scale", copies=copies, noise=0.005)
    print(f"wrote {copies * per_copy} trial runs in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    code = report.main(["--tracking-uri", uri, "--experiment", "scale", "--out", str(folder / "report")])
    print(f"report.py on {copies * per_copy} runs: {time.perf_counter() - start:.1f} s (exit {code})")


if __name__ == "__main__":
    main()
