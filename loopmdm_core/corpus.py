"""Corpora as `datasets.Dataset`s of documents (a `text` column), with a content fingerprint for caching.

The fingerprint is known before the documents are read: a sweep loads a corpus once per trial, and once its
tokens are cached (data.py) only the fingerprint is needed, so the documents (a task's 200,000 generated
problems, a parsed file) are loaded on first use of `Corpus.documents`, which is only a cache build.

Sources: `builtin:shakespeare` (shipped in the package), a local .txt/.jsonl/.parquet file or a folder of
them, or `hf:NAME[:CONFIG]` from the Hugging Face hub (online only); `with_task` mixes a reasoning task's train
problems in (tasks.py; with a `prompt` column, the text's prefix the model is given, "" for plain text), `none`
is the task alone. `datasets` is imported here, not at
package import, so the model and trainer run where it is not installed (e.g. GPU benchmark machines).
"""

import functools
import hashlib
import lzma
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .hashing import sha256_files
from .jsonl import read_fields

ASSETS = Path(__file__).parent / "assets"
BUILTIN = {"shakespeare": ASSETS / "shakespeare.jsonl.xz"}
SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass
class Corpus:
    name: str
    fingerprint: str  # changes whenever the documents may have changed
    load: Callable[[], object] = field(repr=False)  # reads or generates the documents

    @functools.cached_property
    def documents(self):
        """datasets.Dataset with a "text" column (and "prompt" when a prompted task is mixed in)."""
        return self.load()

    def texts(self) -> list[str]:
        """The documents' text, in order (through Arrow: iterating a Dataset's column formats row by row, which
        took 8 s for 200,000 task problems)."""
        return self.documents.with_format("arrow")["text"].to_pylist()


def _read_file(path: Path, text_field: str) -> list[str]:
    try:
        if path.suffix == ".txt":
            # A plain text file: documents are the blocks separated by blank lines.
            return [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
        if path.suffix == ".jsonl":
            return [text for (text,) in read_fields(path, (text_field,), "set data.text_field")]
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(table.column_names)}; "
                            f"set data.text_field)")
        return [t for t in table.column(text_field).to_pylist() if t]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def with_task(corpus: Corpus | None, task: str, n_problems: int, prompted: bool = False) -> Corpus:
    """`corpus` (None: no text) plus the task's train problems as documents; the fingerprint covers both.
    `prompted`: the documents carry their prompts (a `prompt` column; "" for the corpus's plain text)."""
    from .tasks import source_fingerprint

    def load():
        import datasets

        from .tasks import documents
        texts, prompts = documents(task, n_problems)
        docs = datasets.Dataset.from_dict({"text": texts, "prompt": prompts} if prompted else {"text": texts})
        if corpus is None:
            return docs
        plain = corpus.documents
        if prompted:
            plain = plain.map(lambda b: {"prompt": [""] * len(b["text"])}, batched=True, desc="plain text")
        return datasets.concatenate_datasets([plain, docs])

    name, fingerprint = (task, "") if corpus is None else (f"{corpus.name}+{task}", corpus.fingerprint)
    fingerprint = hashlib.sha256(f"{fingerprint}|{task}|{source_fingerprint(task)}|{n_problems}|{prompted}"
                                 .encode()).hexdigest()
    return Corpus(name, fingerprint, load)


def spec_problems(spec: str) -> list[str]:
    """What is wrong with data.corpus that can be told without reading it (a missing file, an unknown built-in
    name, a file of another kind): checked by config validation, so a dry run catches it too."""
    if spec == "none" or spec.startswith("hf:"):
        return []
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        return [] if name in BUILTIN else [f"data.corpus: unknown built-in corpus {name!r}; built-in: "
                                           f"{', '.join('builtin:' + k for k in BUILTIN)}"]
    path = Path(spec).expanduser()
    if not path.exists():
        return [f"data.corpus: {spec} does not exist; give a .txt/.jsonl/.parquet file or folder, "
                f"builtin:shakespeare, or hf:NAME"]
    if path.is_file() and path.suffix not in SUFFIXES:
        return [f"data.corpus: {spec}: need files ending in {', '.join(SUFFIXES)}"]
    return []


def load_corpus(spec: str, text_field: str = "text", task: str = "", task_problems: int = 0,
                task_prompted: bool = False) -> Corpus:
    """The corpus named by `spec` (data.corpus), with `task`'s problems mixed in when given. What can be told
    without reading the documents is checked here; a file's contents are checked when they are first read."""
    if task:
        return with_task(None if spec == "none" else load_corpus(spec, text_field), task, task_problems,
                         task_prompted)

    def dataset(texts: list[str]):
        import datasets
        return datasets.Dataset.from_dict({"text": texts})

    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN:
            raise DataError(f"data.corpus: unknown built-in corpus {name!r}; built-in: "
                            f"{', '.join('builtin:' + k for k in BUILTIN)}")
        path = BUILTIN[name]
        return Corpus(spec, sha256_files([path], with_names=True),
                      lambda: dataset([text for (text,) in read_fields(path, ("text",), opener=lzma.open)]))
    if spec.startswith("hf:"):
        import datasets
        name, _, config = spec[3:].partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split="train")
        except Exception as e:  # the hub raises many types: offline, not found, gated, ...
            raise DataError(f"data.corpus: cannot load Hugging Face dataset {name!r}: {e}") from None
        if text_field not in ds.column_names:
            raise DataError(f"data.corpus: {name} has no column {text_field!r} (columns: "
                            f"{', '.join(ds.column_names)}; set data.text_field)")
        ds = ds.select_columns([text_field]).rename_column(text_field, "text") if text_field != "text" else \
            ds.select_columns(["text"])
        return Corpus(spec, hashlib.sha256(f"{spec}:{ds._fingerprint}".encode()).hexdigest(), lambda: ds)

    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data.corpus: {spec} does not exist; give a .txt/.jsonl/.parquet file or folder, "
                        f"builtin:shakespeare, or hf:NAME")
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files or any(p.suffix not in SUFFIXES for p in files):
        raise DataError(f"data.corpus: {spec}: need files ending in {', '.join(SUFFIXES)}")

    def load():
        texts = [text for p in files for text in _read_file(p, text_field)]
        if not texts:
            raise DataError(f"data.corpus: {spec} holds no text")
        return dataset(texts)

    # A .txt file has no fields; in .jsonl and .parquet files text_field picks which text the corpus is.
    field_name = text_field if any(p.suffix != ".txt" for p in files) else ""
    fingerprint = hashlib.sha256(f"{sha256_files(files, with_names=True)}|{field_name}".encode()).hexdigest()
    return Corpus(str(path.resolve()), fingerprint, load)
