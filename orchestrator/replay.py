"""python orchestrator/replay.py [--spool DIR] [--tracking-uri URI]

Deliver what trials could not log: metrics (and final run statuses) that the tracking store refused while it was
down, or that a compute node without network wrote to its spool folder (orchestrator.tracking.spool_dir()). Each
spool file is one run's; a metric step the run already holds is skipped, so replaying twice, or after the trial
re-logged some steps itself, duplicates nothing. Delivered files are removed.
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `orchestrator` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow.entities import Metric  # noqa: E402

from loopmdm_core.errors import LoopMDMError  # noqa: E402
from orchestrator import tracking  # noqa: E402


def replay_file(client, path: Path) -> int:
    """Log one spool file's metrics (those the run lacks) and its last recorded status; returns metrics sent."""
    run_id = path.stem
    try:
        client.get_run(run_id)
    except Exception:
        raise tracking.TrackingError(f"{path}: run {run_id} is not in this tracking store; pass the "
                                     f"--tracking-uri the sweep used") from None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_key = defaultdict(list)
    status = None
    for r in records:
        if "key" in r:
            by_key[r["key"]].append(r)
        else:
            status = r
    batch = []
    for key, rows in by_key.items():
        held = {m.step for m in client.get_metric_history(run_id, key)}
        for r in rows:
            if r["step"] not in held:
                held.add(r["step"])
                batch.append(Metric(key, float(r["value"]), int(r["timestamp"]), int(r["step"])))
    tracking.log_metrics(client, run_id, batch)
    if status is not None:
        tracking.end_run(client, run_id, status["status"], status.get("error"))
    path.unlink()
    return len(batch)


def replay_runs(client, folder: Path, run_ids: set[str]) -> int:
    """Replay the spool files in `folder` of the runs `run_ids` (a sweep's trials); returns metrics sent."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return sum(replay_file(client, path) for path in files if path.stem in run_ids)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spool", help="spool folder (default: $LOOPMDM_SPOOL, else ~/.cache/loopmdm/mlflow_spool)")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here")
    args = parser.parse_args(argv)
    folder = Path(args.spool).expanduser() if args.spool else tracking.spool_dir()
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        print(f"nothing to replay in {folder}")
        return 0
    try:
        uri = tracking.resolve_uri(args.tracking_uri)
        client = tracking.check_store(uri)
        for path in files:
            print(f"{path.stem}: {replay_file(client, path)} metrics delivered")
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
