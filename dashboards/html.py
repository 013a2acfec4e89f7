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
"""


def table(headers: list[str], rows: list[list[str]], css_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def notes(lines: list[str]) -> str:
    """Lines of plain text in the neutral note style (provenance, verdict rules, extrapolations alike: nothing
    fitted is shouted louder than what was measured)."""
    return "".join(f"<p class='note'>{html.escape(line)}</p>" for line in lines)


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption class="note">' \
           f'{html.escape(alt)}</figcaption></figure>'


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """`sections`: (heading, HTML body) pairs, in order."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "</body></html>")
