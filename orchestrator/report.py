"""python orchestrator/report.py [--experiment NAME] [--tracking-uri URI] [--sweep-run ID] [--out DIR]

Speedup tables and iso-FLOPs curves of a sweep, built only from what MLflow holds: a markdown table on stdout,
the same as CSV and JSON, PNG figures and a self-contained HTML dashboard, all also logged as artifacts of the
sweep's parent run (folder `report/`). Default: the latest sweep in the default store. Beside every speedup: whether
it stands above seed noise; held-out accuracy when the trials log it; the learning rates each variant used;
power-law extrapolations only where their fits and seed intervals allow, labelled as such.
"""

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `orchestrator` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loopmdm_core import metrics  # noqa: E402
from loopmdm_core.errors import LoopMDMError  # noqa: E402
from orchestrator import isoflops as iso  # noqa: E402
from orchestrator import tracking  # noqa: E402
from orchestrator.comparison import (BASELINES, LOSS_NAMES, NEWCOMBE, AccuracyRow, Comparison, Row,  # noqa: E402
                                     Versus, compare)
from orchestrator.sweep_data import SweepData, load  # noqa: E402

HEADERS = ["variant", "loop", "loops", "params", "FLOPs/token", "budget", "final val loss",
           "speedup vs same-size", "speedup vs depth-matched"]
NOISE_HEADERS = ["variant", "budget", "baseline", "seeds", "baseline final loss ± std over seeds",
                 "loss difference (loop - baseline, paired) [95% t]", "loss verdict", "speedup verdict"]
ACCURACY_HEADERS = ["variant", "budget", "seeds", "final accuracy (pooled Wilson 95%)", "seed mean [95% t]",
                    "gap vs same-size (loop - same-size, paired)", "gap verdict",
                    "FLOPs to same-size's final accuracy (speedup)"]
INTERVALS = ("intervals: a speedup is the median over seeds (a seed that never reaches the target ranks below every "
             "reached value) with a percentile bootstrap 95% interval over seeds; a paired difference (loop minus "
             "baseline, same seed) has a Student t 95% interval over seeds")


@dataclass(frozen=True)
class Section:
    """One titled part of the report: lines of text, then an optional table; rendered to stdout, markdown and
    HTML alike so that the three never disagree."""
    title: str
    lines: list[str]
    headers: list[str] | None = None
    rows: list[list[str]] | None = None


def headers(comparison: Comparison) -> list[str]:
    loss = "final answer loss" if comparison.loss_metric == metrics.VAL_ANSWER_LOSS else "final val loss"
    return [loss if h == "final val loss" else h for h in HEADERS]


def speedup_cell(row: Row, variant: str) -> str:
    if row.variant != "loop":
        return "-"
    versus = row.versus.get(variant)
    return versus.speedup.fmt() if versus else "n/a (no baseline)"


def table_rows(comparison: Comparison) -> list[list[str]]:
    return [[r.label, r.loop, str(r.n_loops), f"{r.params:,}", f"{r.flops_per_token:.3g}", f"{r.budget:.3g}",
             r.final_loss.fmt(4), speedup_cell(r, "same_size"), speedup_cell(r, "depth_matched")]
            for r in comparison.rows]


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def provenance(data: SweepData, comparison: Comparison) -> list[str]:
    """What the numbers rest on: the sweep, the runs used, the runs left out and why, the loss compared."""
    used = f"runs used: {comparison.trials_used} finished trials of {len(data.trials)}"
    if comparison.candidates_left_out:
        used += (f" ({comparison.candidates_left_out} LR-ladder candidates are in no comparison, only under "
                 f"Learning rates)")
    lines = [f"sweep: experiment {data.experiment!r}, parent run {data.parent_run_id} ({data.tracking_uri})", used,
             f"loss compared: {LOSS_NAMES[comparison.loss_metric]}", INTERVALS]
    if data.parent_status == "RUNNING":
        lines.append("the sweep is still running: this report covers the trials finished so far")
    for t in data.not_finished:
        why = f": {t.error.splitlines()[-1]}" if t.error else ""
        lines.append(f"left out: {t.name} ({t.status}{why})")
    return lines


def _signed(i: iso.Interval, digits: int) -> str:
    return f"{i.mean:+.{digits}f} [{i.low:+.{digits}f}, {i.high:+.{digits}f}]"


def _difference_cell(versus: Versus) -> str:
    d = versus.difference
    if d is None:
        return "n/a (the loop's curve does not reach the baseline's final FLOPs)"
    return _signed(d, 4) if d.n > 1 else f"{d.mean:+.4f} ({iso.ONE_SEED})"


def noise_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Per loop config and baseline: the baseline's seed-to-seed spread, the paired loss difference and the
    verdicts of it and of the speedup."""
    rows = []
    for r in comparison.rows:
        for variant in BASELINES:
            v = r.versus.get(variant)
            if v is None:
                continue
            spread = (f"{v.baseline_loss:.4f} ± {v.baseline_std:.4f}" if v.baseline_std is not None
                      else f"{v.baseline_loss:.4f} (1 seed: no spread)")
            rows.append([r.label, f"{r.budget:.3g}", v.baseline, str(v.speedup.seeds), spread, _difference_cell(v),
                         v.difference_verdict(), v.speedup.verdict()])
    return NOISE_HEADERS, rows


def iso_lines(comparison: Comparison) -> list[str]:
    return [f"{row['label']} over budgets {', '.join(f'{b:.3g}' for b in row['budgets'])} (finished schedules) "
            f"— vs same-size: {row['vs_same_size'].fmt()} ({row['vs_same_size'].verdict()}) — vs depth-matched: "
            f"{row['vs_depth_matched'].fmt()} ({row['vs_depth_matched'].verdict()})" for row in comparison.iso_rows]


def extrapolation_lines(comparison: Comparison) -> list[str]:
    return [f"EXTRAPOLATION (fit, not measured): {t.label} vs {t.baseline}: " +
            "; ".join(f"at {e.factor:g}x the largest budget: {e.fmt()}" for e in t.at)
            for t in comparison.extrapolations]


def learning_rate_section(comparison: Comparison) -> Section:
    lr = comparison.learning_rates
    if lr.budget is None:
        return Section("Learning rates", list(lr.lines))
    lrs = sorted({c.lr for c in lr.cells})
    cells = {(c.label, c.lr): c for c in lr.cells}
    rows = [[label] + [f"{cells[label, x].loss:.4f}{' (chosen)' if cells[label, x].chosen else ''}"
                       if (label, x) in cells else "-" for x in lrs]
            for label in sorted({c.label for c in lr.cells})]
    caption = (f"LR ladder: seed-mean final {comparison.loss_metric} at budget {lr.budget:.3g} for every learning "
               f"rate tried (the candidates are in no other table)")
    return Section("Learning rates", list(lr.lines) + [caption], ["variant"] + [f"lr {x:g}" for x in lrs], rows)


def _accuracy_gap_cell(r: AccuracyRow) -> str:
    if r.gap is None:
        return "-"
    if r.gap_method == iso.ONE_SEED:
        return f"{r.gap.mean:+.3f} ({iso.ONE_SEED})"
    return _signed(r.gap, 3) + (f" ({NEWCOMBE})" if r.gap_method == NEWCOMBE else "")


def accuracy_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Held-out exact-match accuracy at the end of training, and for loop configs the paired gap to the same-size
    baseline and the FLOPs they need to reach its final accuracy (running maximum of the accuracy curve)."""
    rows = []
    for r in comparison.accuracy:
        p, m = r.pooled, r.seed_mean
        pooled = "n/a (problem count not recorded)" if p is None else \
            f"{p.mean:.3f} [{p.low:.3f}, {p.high:.3f}] ({p.n} problems)"
        mean = f"{m.mean:.3f} [{m.low:.3f}, {m.high:.3f}]" if m.n > 1 else f"{m.mean:.3f} ({iso.ONE_SEED})"
        rows.append([r.label, f"{r.budget:.3g}", str(r.seeds), pooled, mean, _accuracy_gap_cell(r), r.gap_verdict(),
                     r.speedup.fmt() if r.speedup else "-"])
    return ACCURACY_HEADERS, rows


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


def sections(comparison: Comparison) -> list[Section]:
    """Everything after the main speedup table, in the order every output shows it."""
    out = []
    noise_headers, noise_rows = noise_table(comparison)
    if noise_rows:
        out.append(Section("Is it above noise?", ["a verdict is 'no detectable difference' when its 95% interval "
                                                  "includes 1.0x (speedup) or 0 (loss difference)"],
                           noise_headers, noise_rows))
    out.append(learning_rate_section(comparison))
    if comparison.accuracy:
        out.append(Section("Held-out accuracy", [], *accuracy_table(comparison)))
    if comparison.iso_rows:
        out.append(Section("Iso-FLOPs (finished schedules)", iso_lines(comparison)))
    if comparison.loop_scaling:
        out.append(Section("Validation loss vs inference loops", ["* = the trained loop count"],
                           *loop_scaling_table(comparison)))
    if comparison.attention:
        out.append(Section("Attention among masked positions", [], *attention_table(comparison)))
    if comparison.task:
        out.append(Section("Reasoning-task accuracy vs inference compute", [], *task_table(comparison)))
    if comparison.extrapolations:
        out.append(Section("Extrapolations (fit, not measured)", extrapolation_lines(comparison)))
    return out


def section_markdown(s: Section) -> str:
    text = "".join(f"{line}\n\n" for line in s.lines)
    return f"\n## {s.title}\n\n{text}" + (markdown(s.headers, s.rows) + "\n" if s.headers else "")


def speedups_json(data: SweepData, comparison: Comparison, info: list[str]) -> dict:
    return {"experiment": data.experiment, "parent_run_id": data.parent_run_id,
            "loss": LOSS_NAMES[comparison.loss_metric], "loss_metric": comparison.loss_metric,
            "provenance": info, "rows": [r.as_dict() for r in comparison.rows],
            "iso_flops": [{"label": r["label"], "budgets": r["budgets"], "vs_same_size": r["vs_same_size"].as_dict(),
                           "vs_depth_matched": r["vs_depth_matched"].as_dict()} for r in comparison.iso_rows],
            "extrapolations": [e for t in comparison.extrapolations for e in t.as_dicts()],
            "learning_rates": comparison.learning_rates.as_dict(),
            "held_out_accuracy": [r.as_dict() for r in comparison.accuracy],
            "inference_loop_scaling": [{**r, "val_loss": {k: v.mean for k, v in r["val_loss"].items()}}
                                       for r in comparison.loop_scaling],
            "attention_mask_to_mask": [{**r, "share": [v.mean for v in r["share"]]} for r in comparison.attention],
            "task_accuracy": [{**r, "accuracy": {"mean": r["accuracy"].mean, "low": r["accuracy"].low,
                                                 "high": r["accuracy"].high, "problems": r["accuracy"].n}}
                              for r in comparison.task]}


def write_outputs(data: SweepData, comparison: Comparison, out: Path) -> list[Path]:
    from dashboards import figures, html
    out.mkdir(parents=True, exist_ok=True)
    head, rows, info, parts = headers(comparison), table_rows(comparison), provenance(data, comparison), \
        sections(comparison)
    md = out / "speedups.md"
    md.write_text("\n".join(f"- {line}" for line in info) + "\n\n" + markdown(head, rows) + "\n" +
                  "".join(section_markdown(s) for s in parts))
    with open(out / "speedups.csv", "w", newline="") as f:
        csv.writer(f).writerows([head] + rows)
    (out / "speedups.json").write_text(json.dumps(speedups_json(data, comparison, info), indent=2))
    files = [md, out / "speedups.csv", out / "speedups.json"]
    pngs = [figures.loss_vs_flops(data, comparison.loss_metric, out / "loss_vs_flops.png"),
            figures.speedup_bars(comparison, out / "speedup_bars.png"),
            figures.loss_vs_loops(comparison, out / "loss_vs_loops.png")]
    if comparison.accuracy:
        pngs.append(figures.accuracy_vs_flops(data, out / "accuracy_vs_flops.png"))
    if comparison.loop_scaling:
        pngs.append(figures.loss_vs_inference_loops(comparison, out / "loss_vs_inference_loops.png"))
    if comparison.attention:
        pngs.append(figures.attention_shares(comparison, out / "attention_shares.png"))
    if comparison.task:
        pngs.append(figures.accuracy_vs_inference_flops(comparison, out / "accuracy_vs_inference_flops.png"))
    files += pngs
    body = [("Provenance", html.notes(info)), ("Speedups", html.table(head, rows, "speedups"))]
    body += [(s.title, html.notes(s.lines) + (html.table(s.headers, s.rows) if s.headers else "")) for s in parts]
    body.append(("Figures", "".join(html.image(p, p.stem.replace("_", " ")) for p in pngs)))
    page = out / "index.html"
    page.write_text(html.page(f"LoopMDM report: {data.experiment}", body))
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
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(provenance(data, comparison)) + "\n")
    print(markdown(headers(comparison), table_rows(comparison)))
    for part in sections(comparison):
        print("\n" + "\n".join([f"## {part.title}", *part.lines] + ([markdown(part.headers, part.rows)]
                                                                   if part.headers else [])))
    print(f"\nreport: {out / 'index.html'} (and .md/.csv/.json/.png beside it"
          f"{'' if args.no_log else ', logged to the parent run under report/'}); {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
