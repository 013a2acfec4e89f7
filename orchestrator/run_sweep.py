"""python orchestrator/run_sweep.py sweeps/iso_flops.yaml [--dry-run] [--tracking-uri URI] [--address ADDR]

Runs an iso-FLOPs sweep on Ray Tune, every trial logged to MLflow. Running the same command again resumes an
interrupted sweep; --restart starts it over. User errors print one message and exit 2, before any compute.
"""

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `orchestrator` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loopmdm_core.errors import LoopMDMError  # noqa: E402
from orchestrator import spec as specs  # noqa: E402
from orchestrator import trials as trial_specs  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="sweep YAML, e.g. sweeps/iso_flops.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the trial table and total FLOPs; start nothing")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's tracking.uri, then "
                                               "MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--resume", action="store_true", help="resume an interrupted sweep, and fail if there is none "
                                                              "to resume (without it: resumed when its results "
                                                              "folder exists, started otherwise)")
    parser.add_argument("--restart", action="store_true", help="discard the sweep's Ray results and start over "
                                                               "(new MLflow runs; the old ones stay)")
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard on 127.0.0.1:8265")
    parser.add_argument("-q", "--quiet", action="store_true", help="no live trial table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.resume and args.restart:
        parser.error("--resume and --restart contradict each other")
    try:
        spec = specs.load(args.sweep)
        # Expanded once, here: the dry run prints these trials and the sweep runs them.
        trials, later = trial_specs.expand(spec), trial_specs.later_trials(spec)  # later: an lr ladder's, lr to come
        total = sum(t.plan.total_flops for t in trials + later)
        print(f"sweep {spec.name!r}: {len(trials) + len(later)} trials, {total:.3g} training FLOPs in all")
        if args.dry_run:
            print(trial_specs.dry_run_text(spec, trials, later))
            return 0
        from orchestrator import sweep
        outcome = sweep.run(spec, trials, later, tracking_uri=args.tracking_uri, address=args.address, restart=args.restart, resume_only=args.resume,
                            dashboard=args.dashboard, verbose=0 if args.quiet else 1)
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nsweep {spec.name!r} done in {outcome.seconds:.0f} s: {len(outcome.finished)} finished, "
          f"{len(outcome.failed)} failed, {len(outcome.interrupted)} interrupted")
    if outcome.train_seconds:
        # Training time is summed over every trial of the sweep run, so the wall it is set against is too: that of
        # every invocation (an interrupted sweep resumed), not this one alone.
        wall = outcome.seconds + outcome.earlier_seconds
        resumed = f" ({outcome.earlier_seconds:.0f} s of it before this invocation)" if outcome.earlier_seconds else ""
        ideal = outcome.train_seconds / max(1, outcome.slots)  # every slot training all the time
        print(f"time: {wall:.0f} s wall{resumed} for {outcome.train_seconds:.0f} s of training steps summed over "
              f"trials, {outcome.slots} at a time: wall / (training / {outcome.slots}) = {wall / ideal:.2f} (1.00 "
              f"if every slot trained all the time; the rest is start-up, evaluation, checkpoints and idle slots)")
        if outcome.sweep_mfu is not None:
            print(f"  GPU use: {outcome.sweep_mfu:.1%} of the peak of the {outcome.gpus:g} GPU"
                  f"{'s' if outcome.gpus != 1 else ''} the trials held, over the wall (sweep MFU: the finished "
                  f"trials' model FLOPs / (wall x GPUs x peak))")
        phases = {name.split("/")[1].removesuffix("_seconds"): v for name, v in outcome.phase_seconds.items() if v}
        if phases:
            print("  summed over trials: " + ", ".join(f"{phase} {v:.0f} s" for phase, v in
                                                       {"train": outcome.train_seconds, **phases}.items()))
    if outcome.replayed:
        print(f"tracking: {outcome.replayed} metrics the trials had spooled while the store was down were delivered")
    for name, error in outcome.failed.items():
        print(f"  FAILED {name}: {error}")
    from orchestrator import tracking
    for name, errors in outcome.retried.items():  # Tune started these again; they may have finished since
        print(f"  RETRIED {name} {len(errors)}x, after: {errors[-1][:200]} (tag {tracking.RETRIES_TAG} on its MLflow "
              f"run)")
    print(closing_text(spec.name, outcome))
    return 0 if outcome.ok else 1


def closing_text(name: str, outcome) -> str:
    """Where the sweep is in MLflow, the URL that opens every trial's validation loss against training FLOPs, and
    the next step (the report)."""
    from orchestrator import tracking
    uri, parent = outcome.tracking_uri, outcome.parent_run_id
    command = tracking.ui_command(uri)
    return "\n".join([f"MLflow: parent run {parent} of experiment {name!r} in {uri}",
                      "  validation loss vs training FLOPs, every trial: " +
                      (f"run `{command}`, then open" if command else "open"),
                      f"    {tracking.sweep_url(uri, outcome.experiment_id, parent)}",
                      f"  next, the speedup table and report: {tracking.report_command(uri, name, parent)}"])


if __name__ == "__main__":
    sys.exit(main())
