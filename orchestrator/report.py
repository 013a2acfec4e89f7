"""python orchestrator/report.py [--experiment NAME] [--tracking-uri URI] [--sweep-run ID] [--out DIR]

Speedup tables and iso-FLOPs curves of a sweep, built only from what MLflow holds: a markdown table on stdout,
the same as CSV and JSON, PNG figures and a self-contained HTML dashboard, all also logged as artifacts of the
sweep's parent run (folder `report/`). Default: the latest sweep in the default store. On top, a summary: how many
comparisons exceed the seed-to-seed noise and the sweep's scale. Beside every speedup: whether it stands above seed
noise; held-out accuracy when the trials log it; the learning rates each variant used; power-law extrapolations only
where their fits and seed intervals allow, labelled as such, below everything measured. Every table and figure says
what it shows and how to read it (report_text: the same texts on the page, in speedups.md and on stdout).

The parts: report_tables (the tables as Sections), report_summary (the summary on top, the provenance below),
report_figures (the figures' data), report_pages (the files); this file loads the sweep, writes them and logs them
to the parent run.
"""

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `orchestrator` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loopmdm_core.errors import LoopMDMError  # noqa: E402
from orchestrator import tracking  # noqa: E402
from orchestrator.comparison import Comparison, compare  # noqa: E402
from orchestrator.report_pages import markdown, section_text, write_outputs  # noqa: E402
from orchestrator.report_summary import provenance, provenance_section, summary  # noqa: E402
from orchestrator.report_tables import headers, sections, speedup_section, table_rows  # noqa: E402
from orchestrator.sweep_data import SweepData, load  # noqa: E402


def describe(client, data: SweepData, comparison: Comparison):
    """The parent run's description in the MLflow UI: the noise verdict, the speedup table and a link to
    report/index.html; the median speedups (reached, not lower bounds) as metrics
    headline/<variant>/b<budget>/speedup_vs_<baseline>."""
    top = summary(data, comparison)[0]
    headline = {f"{r.label}/b{r.budget:.3g}/speedup_vs_{variant}":
                None if v.speedup.lower_bound else v.speedup.median
                for r in comparison.rows if r.variant == "loop"
                for variant, v in r.versus.items() if v is not None}
    tracking.describe_sweep(client, data.parent_run_id,
                            top.lines[0] + "\n\n" + markdown(headers(comparison), table_rows(comparison)), headline)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", help="MLflow experiment (= the sweep's name); default: the latest sweep")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here")
    parser.add_argument("--sweep-run", help="the sweep's parent run id (default: the latest in the experiment)")
    parser.add_argument("--out", help="output folder (default: reports/<experiment>-<parent run id>)")
    parser.add_argument("--no-log", action="store_true", help="do not log the outputs to the parent run")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        uri = tracking.resolve_uri(args.tracking_uri)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            raise tracking.TrackingError(f"no tracking database at {uri}; run a sweep first or pass --tracking-uri")
        data = load(uri, args.experiment, args.sweep_run)
        comparison = compare(data)
        if not comparison.rows:
            waiting = (f"; {comparison.candidates_left_out} LR-ladder trials finished, no learning rate chosen yet"
                       if comparison.candidates_left_out else "")
            raise tracking.TrackingError(f"sweep {data.parent_run_id} of {data.experiment!r} has no finished trial "
                                         f"with a validation loss yet ({len(data.trials)} trials in all{waiting})")
        out = Path(args.out or Path("reports") / f"{data.experiment}-{data.parent_run_id[:8]}").resolve()
        files = write_outputs(data, comparison, out)
        if not args.no_log:
            client = tracking.check_store(uri)
            for f in files:
                client.log_artifact(data.parent_run_id, str(f), "report")
            describe(client, data, comparison)
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top = summary(data, comparison)[0]
    print("\n".join(top.lines) + "\n")  # the summary, then the speedup table: stdout's first two paragraphs
    for part in [speedup_section(comparison), *sections(comparison),
                 provenance_section(provenance(data, comparison), top)]:
        print(section_text(part) + "\n")
    print(f"report: {out / 'index.html'} (and .md/.csv/.json/.png beside it"
          f"{'' if args.no_log else ', logged to the parent run under report/'}); {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
