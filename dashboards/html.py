"""A self-contained HTML dashboard: the report's tables and figures on one page, images embedded (base64),
so the file opens from disk, from an MLflow artifact view or an e-mail attachment alike."""

import base64
import html
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 14px; } img { max-width: 100%; border: 1px solid #eee; }
.summary { font-size: 16px; } .caption { font-size: 14px; max-width: 60em; }
ul.notation { font-size: 13px; color: #333; max-width: 60em; } figure { margin: 2em 0; }
figcaption { font-size: 14px; max-width: 60em; }
"""


def table(headers: list[str], rows: list[list[str]], css_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def notes(lines: list[str]) -> str:
    """Lines of plain text in the neutral note style (provenance, verdict rules, extrapolations alike: nothing
    fitted is shouted louder than what was measured)."""
    return "".join(f"<p class='note'>{html.escape(line)}</p>" for line in lines)


def summary(lines: list[str]) -> str:
    """The report's opening lines, in the body text's colour and size; the first (the verdict) in bold."""
    return "".join(f"<p class='summary'>{'<strong>' * (i == 0)}{html.escape(line)}{'</strong>' * (i == 0)}</p>"
                   for i, line in enumerate(lines))


def captions(lines: list[str]) -> str:
    """What a table or figure shows and how to read it: body-coloured text above it."""
    return "".join(f"<p class='caption'>{html.escape(line)}</p>" for line in lines)


def bullets(lines: list[str]) -> str:
    """The notation of a table's cells, under it."""
    if not lines:
        return ""
    return "<ul class='notation'>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def figure(path: Path, title: str, caption: str, alt: str) -> str:
    """A PNG embedded in the page, with its title and what it shows under it."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>'
            f'<b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>')


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """`sections`: (heading, HTML body) pairs, in order."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "</body></html>")
