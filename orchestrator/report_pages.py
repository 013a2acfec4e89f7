"""The report's files: speedups.md, .csv and .json, the figures and index.html, all from the same Sections so that
they never disagree."""

import csv
import json
from pathlib import Path

from dashboards import html

from .comparison import LOSS_NAMES, Comparison
from .report_summary import provenance, provenance_section, summary
from .report_tables import Section, sections, speedup_section
from .report_text import CAPTIONS, EXTRAPOLATIONS, FIGURE_TITLES
from .sweep_data import SweepData


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def section_text(s: Section) -> str:
    """A section as plain text (stdout): its title, caption, lines, table and notation, no blank line inside."""
    return "\n".join([f"## {s.title}", *([s.caption] if s.caption else []), *s.lines]
                     + ([markdown(s.headers, s.rows)] if s.headers else []) + [f"- {line}" for line in s.footer or []])


def section_markdown(s: Section) -> str:
    text = "".join(f"{line}\n\n" for line in ([s.caption] if s.caption else []) + s.lines)
    table = markdown(s.headers, s.rows) + "\n" if s.headers else ""
    footer = "".join(f"- {line}\n" for line in s.footer or [])
    return f"\n## {s.title}\n\n{text}" + table + ("\n" + footer if footer else "")


def section_html(s: Section) -> str:
    """A section's HTML body; the extrapolations' caption stays in the grey note style like their lines."""
    caption = (html.notes if s.title == EXTRAPOLATIONS else html.captions)([s.caption] if s.caption else [])
    return (caption + html.notes(s.lines) + (html.table(s.headers, s.rows) if s.headers else "")
            + html.bullets(s.footer or []))


def figure_markdown(pngs: list[Path]) -> str:
    return f"\n## Figures\n\n{CAPTIONS['figures']}\n\n" + "".join(
        f"![{FIGURE_TITLES[p.stem]}]({p.name})\n\n**{FIGURE_TITLES[p.stem]}.** {CAPTIONS[p.stem]}\n\n" for p in pngs)


def speedups_json(data: SweepData, comparison: Comparison, info: list[str], top: dict | None = None) -> dict:
    return {"experiment": data.experiment, "parent_run_id": data.parent_run_id,
            "loss": LOSS_NAMES[comparison.loss_metric], "loss_metric": comparison.loss_metric,
            "summary": top if top is not None else summary(data, comparison)[1],
            "provenance": info, "rows": [r.as_dict() for r in comparison.rows],
            "iso_flops": [r.as_dict() for r in comparison.iso_rows],
            "extrapolations": [e for t in comparison.extrapolations for e in t.as_dicts()],
            "learning_rates": comparison.learning_rates.as_dict(),
            "held_out_accuracy": [r.as_dict() for r in comparison.accuracy],
            "inference_loop_scaling": [r.as_dict() for r in comparison.loop_scaling],
            "attention_mask_to_mask": [r.as_dict() for r in comparison.attention],
            "task_accuracy": [r.as_dict() for r in comparison.task]}


def write_outputs(data: SweepData, comparison: Comparison, out: Path) -> list[Path]:
    """speedups.md/.csv/.json, the figures and index.html. Page order: the summary, the speedup table, the other
    measured tables, the figures, then the extrapolations (a grey note) and the provenance."""
    from .report_figures import write_figures  # matplotlib loads only once there are files to write
    out.mkdir(parents=True, exist_ok=True)
    info, parts = provenance(data, comparison), sections(comparison)
    top, top_json = summary(data, comparison)
    main_table = speedup_section(comparison)
    measured = [s for s in parts if s.title != EXTRAPOLATIONS]
    fitted = [s for s in parts if s.title == EXTRAPOLATIONS]
    source = provenance_section(info, top)
    with open(out / "speedups.csv", "w", newline="") as f:
        csv.writer(f).writerows([main_table.headers] + main_table.rows)
    (out / "speedups.json").write_text(json.dumps(speedups_json(data, comparison, info, top_json), indent=2))
    pngs = write_figures(data, comparison, out)
    md = out / "speedups.md"
    md.write_text("".join(f"- {line}\n" for line in top.lines) + section_markdown(main_table)
                  + "".join(section_markdown(s) for s in measured) + figure_markdown(pngs)
                  + "".join(section_markdown(s) for s in fitted + [source]))
    files = [md, out / "speedups.csv", out / "speedups.json"] + pngs
    body = [("Summary", html.summary(top.lines)), (main_table.title, section_html(main_table))]
    body += [(s.title, section_html(s)) for s in measured]
    body.append(("Figures", html.captions([CAPTIONS["figures"]]) + "".join(
        html.figure(p, FIGURE_TITLES[p.stem], CAPTIONS[p.stem], alt=p.stem.replace("_", " ")) for p in pngs)))
    body += [(s.title, section_html(s)) for s in fitted + [source]]
    page = out / "index.html"
    page.write_text(html.page(f"LoopMDM report: {data.experiment}", body))
    files.append(page)
    return files
