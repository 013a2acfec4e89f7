"""JSON lines in: a corpus's documents and a GSM8K file's problems are both read here."""

import json
from pathlib import Path

from .errors import DataError


def read_fields(path: str | Path, fields: tuple[str, ...], fix: str = "", opener=open) -> list[tuple[str, ...]]:
    """The string `fields` of every record of a JSON-lines file, blank lines skipped. A line that is not JSON,
    or lacks one of the fields, is a DataError naming the file, the line and `fix` (how to repair it)."""
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            for field in fields:
                if not isinstance(record, dict) or not isinstance(record.get(field), str):
                    raise DataError(f"{path}:{lineno}: no string field {field!r}" + (f" ({fix})" if fix else ""))
            rows.append(tuple(record[field] for field in fields))
    return rows
