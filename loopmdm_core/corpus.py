"""Corpora as `datasets.Dataset`s of documents (a `text` column), with a content fingerprint for caching.

Sources: `builtin:shakespeare` (shipped in the package), a local .txt/.jsonl/.parquet file or a folder of
them, or `hf:NAME[:CONFIG]` from the Hugging Face hub (online only); `with_task` mixes a reasoning task's train
problems in (tasks.py; with a `prompt` column, the text's prefix the model is given, "" for plain text), `none`
is the task alone. `datasets` is imported here, not at
package import, so the model and trainer run where it is not installed (e.g. GPU benchmark machines).
"""

import hashlib
import lzma
from dataclasses import dataclass
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
    documents: object  # datasets.Dataset with a "text" column (and "prompt" when a prompted task is mixed in)


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
    import datasets

    from .tasks import documents
    texts, prompts = documents(task, n_problems)
    docs = datasets.Dataset.from_dict({"text": texts, "prompt": prompts} if prompted else {"text": texts})
    if corpus is None:
        name, fingerprint, mixed = task, "", docs
    else:
        name, fingerprint = f"{corpus.name}+{task}", corpus.fingerprint
        plain = corpus.documents
        if prompted:
            plain = plain.map(lambda b: {"prompt": [""] * len(b["text"])}, batched=True, desc="plain text")
        mixed = datasets.concatenate_datasets([plain, docs])
    fingerprint = hashlib.sha256(f"{fingerprint}|{task}|{n_problems}|{prompted}".encode()).hexdigest()
    return Corpus(name, fingerprint, mixed)


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
    """Load the documents named by `spec` (data.corpus), with `task`'s problems mixed in when given."""
    if task:
        return with_task(None if spec == "none" else load_corpus(spec, text_field), task, task_problems,
                         task_prompted)
    import datasets

    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN:
            raise DataError(f"data.corpus: unknown built-in corpus {name!r}; built-in: "
                            f"{', '.join('builtin:' + k for k in BUILTIN)}")
        path = BUILTIN[name]
        texts = [text for (text,) in read_fields(path, ("text",), opener=lzma.open)]
        return Corpus(spec, sha256_files([path], with_names=True), datasets.Dataset.from_dict({"text": texts}))
    if spec.startswith("hf:"):
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
        return Corpus(spec, hashlib.sha256(f"{spec}:{ds._fingerprint}".encode()).hexdigest(), ds)

    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data.corpus: {spec} does not exist; give a .txt/.jsonl/.parquet file or folder, "
                        f"builtin:shakespeare, or hf:NAME")
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files or any(p.suffix not in SUFFIXES for p in files):
        raise DataError(f"data.corpus: {spec}: need files ending in {', '.join(SUFFIXES)}")
    texts = [text for p in files for text in _read_file(p, text_field)]
    if not texts:
        raise DataError(f"data.corpus: {spec} holds no text")
    return Corpus(str(path.resolve()), sha256_files(files, with_names=True), datasets.Dataset.from_dict({"text": texts}))
