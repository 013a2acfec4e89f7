"""python orchestrator/report.py [--experiment NAME] [--tracking-uri URI] [--sweep-run ID] [--out DIR]

Speedup tables and iso-FLOPs curves of a sweep, built only from what MLflow holds: a markdown table on stdout,
the same as CSV and JSON, PNG figures and a self-contained HTML dashboard, all also logged as artifacts of the
sweep's parent run (folder `report/`). Default: the latest sweep in the default store.
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `orchestrator` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loopmdm_core.errors import LoopMDMError  # noqa: E402
from orchestrator import tracking  # noqa: E402
from orchestrator.comparison import Comparison, compare  # noqa: E402
from orchestrator.sweep_data import SweepData, load  # noqa: E402

LOSS_NAME = "validation negative ELBO (val/loss, nats/token; lower is better)"
HEADERS = ["variant", "loop", "loops", "params", "FLOPs/token", "budget", "final val loss",
           "speedup vs same-size", "speedup vs depth-matched"]


def table_rows(comparison: Comparison) -> list[list[str]]:
    return [[r.label, r.loop, str(r.n_loops), f"{r.params:,}", f"{r.flops_per_token:.3g}", f"{r.budget:.3g}",
             r.final_loss.fmt(4), r.vs_same_size.fmt() if r.vs_same_size else "-",
             r.vs_depth_matched.fmt() if r.vs_depth_matched else "-"] for r in comparison.rows]


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def provenance(data: SweepData, comparison: Comparison) -> list[str]:
    """What the numbers rest on: the sweep, the runs used, the runs left out and why, the loss compared."""
    lines = [f"sweep: experiment {data.experiment!r}, parent run {data.parent_run_id} ({data.tracking_uri})",
             f"runs used: {comparison.trials_used} finished trials of {len(data.trials)}",
             f"loss compared: {LOSS_NAME}; intervals: bootstrap 95% over seeds"]
    if data.parent_status == "RUNNING":
        lines.append("the sweep is still running: this report covers the trials finished so far")
    for t in data.not_finished:
        why = f": {t.error.splitlines()[-1]}" if t.error else ""
        lines.append(f"left out: {t.name} ({t.status}{why})")
    return lines


def iso_lines(comparison: Comparison) -> list[str]:
    out = []
    for row in comparison.iso_rows:
        out.append(f"{row['label']} over budgets {', '.join(f'{b:.3g}' for b in row['budgets'])} (finished "
                   f"schedules): vs same-size {row['vs_same_size'].fmt()}; vs depth-matched "
                   f"{row['vs_depth_matched'].fmt()}")
    return out


def extrapolation_lines(comparison: Comparison) -> list[str]:
    fmt = lambda v: "not reached" if v is None else f"{v:.2f}x"
    return [f"EXTRAPOLATION (power-law fit, not measured): {e['label']} vs {e['baseline']}: "
            f"{fmt(e['speedup_at_10x'])} at 10x the largest budget, {fmt(e['speedup_at_100x'])} at 100x"
            for e in comparison.extrapolations]


def loop_scaling_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Validation loss at each inference loop count (* marks the trained count), seed means."""
    ks = sorted({k for r in comparison.loop_scaling for k in r["val_loss"]})
    headers = ["variant", "budget", "seeds"] + [f"{k} loop{'s' if k > 1 else ''}" for k in ks]
    rows = [[r["label"], f"{r['budget']:.3g}", str(r["seeds"])] +
            [f"{r['val_loss'][k].mean:.4f}{'*' if k == r['trained_loops'] else ''}" if k in r["val_loss"] else "-"
             for k in ks] for r in comparison.loop_scaling]
    return headers, rows


def attention_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Share of masked queries' attention on masked keys, per layer application (L1#2: layer 1, 2nd loop)."""
    headers = ["variant", "budget", "seeds", "mask->mask share per layer application"]
    rows = [[r["label"], f"{r['budget']:.3g}", str(r["seeds"]),
             ", ".join(f"{name} {share.mean:.3f}" for name, share in zip(r["layers"], r["share"]))]
            for r in comparison.attention]
    return headers, rows


def task_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Reasoning-task accuracy per loop schedule (95% Wilson interval over all seeds' problems), forward
    GFLOPs per answer, and for adaptive schedules the compute saved against the cheapest fixed loop count that
    is at least as accurate."""
    headers = ["variant", "budget", "seeds", "schedule", "accuracy [95% CI]", "GFLOPs/answer",
               "compute saved at equal accuracy"]

    def saved(r):
        if r["schedule"].startswith("fixed:"):
            return ""
        return "no fixed count as accurate" if r["compute_saved"] is None else f"{100 * r['compute_saved']:.0f}%"
    rows = [[r["label"], f"{r['budget']:.3g}", str(r["seeds"]), r["schedule"], r["accuracy"].fmt(3),
             f"{r['flops_per_problem'] / 1e9:.4f}", saved(r)] for r in comparison.task]
    return headers, rows


def write_outputs(data: SweepData, comparison: Comparison, out: Path) -> list[Path]:
    from dashboards import figures, html
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(comparison)
    info = provenance(data, comparison)
    files = []
    md = out / "speedups.md"
    extra_tables = [(title, *make(comparison)) for title, make, present in (
        ("Validation loss vs inference loops", loop_scaling_table, comparison.loop_scaling),
        ("Attention among masked positions", attention_table, comparison.attention),
        ("Reasoning-task accuracy vs inference compute", task_table, comparison.task)) if present]
    md.write_text("\n".join(f"- {line}" for line in info) + "\n\n" + markdown(HEADERS, rows) + "\n" +
                  "".join(f"\n## {title}\n\n{markdown(h, r)}\n" for title, h, r in extra_tables))
    with open(out / "speedups.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADERS] + rows)
    (out / "speedups.json").write_text(json.dumps(
        {"experiment": data.experiment, "parent_run_id": data.parent_run_id, "loss": LOSS_NAME,
         "provenance": info, "rows": [r.as_dict() for r in comparison.rows],
         "iso_flops": [{"label": r["label"], "budgets": r["budgets"], "vs_same_size": r["vs_same_size"].as_dict(),
                        "vs_depth_matched": r["vs_depth_matched"].as_dict()} for r in comparison.iso_rows],
         "extrapolations": comparison.extrapolations,
         "inference_loop_scaling": [{**r, "val_loss": {k: v.mean for k, v in r["val_loss"].items()}}
                                    for r in comparison.loop_scaling],
         "attention_mask_to_mask": [{**r, "share": [v.mean for v in r["share"]]} for r in comparison.attention],
         "task_accuracy": [{**r, "accuracy": {"mean": r["accuracy"].mean, "low": r["accuracy"].low,
                                              "high": r["accuracy"].high, "problems": r["accuracy"].n}}
                           for r in comparison.task]},
        indent=2))
    files += [md, out / "speedups.csv", out / "speedups.json"]
    pngs = [figures.loss_vs_flops(data, out / "loss_vs_flops.png"),
            figures.speedup_bars(comparison, out / "speedup_bars.png"),
            figures.loss_vs_loops(comparison, out / "loss_vs_loops.png")]
    if comparison.loop_scaling:
        pngs.append(figures.loss_vs_inference_loops(comparison, out / "loss_vs_inference_loops.png"))
    if comparison.attention:
        pngs.append(figures.attention_shares(comparison, out / "attention_shares.png"))
    if comparison.task:
        pngs.append(figures.accuracy_vs_inference_flops(comparison, out / "accuracy_vs_inference_flops.png"))
    files += pngs
    notes = "".join(f"<p class='note'>{html.html.escape(line)}</p>" for line in info)
    sections = [("Provenance", notes), ("Speedups", html.table(HEADERS, rows, "speedups"))]
    if comparison.iso_rows:
        sections.append(("Iso-FLOPs (finished schedules)", "".join(f"<p>{html.html.escape(x)}</p>"
                                                                    for x in iso_lines(comparison))))
    if comparison.extrapolations:
        sections.append(("Extrapolations", "".join(f"<p class='warn'>{html.html.escape(x)}</p>"
                                                   for x in extrapolation_lines(comparison))))
    sections += [(title, html.table(h, r)) for title, h, r in extra_tables]
    sections.append(("Figures", "".join(html.image(p, p.stem.replace("_", " ")) for p in pngs)))
    page = out / "index.html"
    page.write_text(html.page(f"LoopMDM report: {data.experiment}", sections))
    files.append(page)
    return files


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
            raise tracking.TrackingError(f"sweep {data.parent_run_id} of {data.experiment!r} has no finished trial "
                                         f"with a validation loss yet ({len(data.trials)} trials in all)")
        out = Path(args.out or Path("reports") / f"{data.experiment}-{data.parent_run_id[:8]}").resolve()
        files = write_outputs(data, comparison, out)
        if not args.no_log:
            client = tracking.check_store(uri)
            for f in files:
                client.log_artifact(data.parent_run_id, str(f), "report")
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(provenance(data, comparison)) + "\n")
    print(markdown(HEADERS, table_rows(comparison)))
    for line in iso_lines(comparison) + extrapolation_lines(comparison):
        print("\n" + line)
    for title, make, present in (("validation loss vs inference loops (* = trained count)", loop_scaling_table,
                                  comparison.loop_scaling),
                                 ("attention among masked positions", attention_table, comparison.attention),
                                 ("reasoning-task accuracy vs inference compute", task_table, comparison.task)):
        if present:
            print(f"\n{title}:\n" + markdown(*make(comparison)))
    print(f"\nreport: {out / 'index.html'} (and .md/.csv/.json/.png beside it"
          f"{'' if args.no_log else ', logged to the parent run under report/'}); {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
