"""Token cache and batches: a corpus is tokenized once into Arrow shards, then read memory-mapped.

The cache key hashes (the corpus's content fingerprint, the tokenizer's kind and size, seq_len, split), so any
change rebuilds and nothing stale is read; a trained BPE is a function of those and is kept in the entry.
Documents go to train or validation by a hash of their text (deterministic, independent of order);
each split is the concatenation of its documents, EOS between them, cut into packed rows of seq_len tokens.
A prompted task's problems (data.task_format) are rows of their own instead: the prompt, the answer, then EOS
up to seq_len, with a `fixed` column marking the prompt tokens that the noise never masks.
Batches are a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from . import tokenizer as tokenizers
from .config import DataConfig
from .corpus import load_corpus
from .errors import DataError

SHARD_TOKENS = 1 << 22  # ~16 MB of uint32 per shard
CACHE_VERSION = 2  # bump when the shard layout changes (2: keyed by the tokenizer's kind; a BPE copy inside)
BPE_FILE = "tokenizer.json"  # a cache entry's own copy of the BPE it was tokenized with


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("LOOPMDM_CACHE") or Path.home() / ".cache" / "loopmdm").expanduser()


def _doc_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64


def split_documents(texts: list[str], val_fraction: float) -> tuple[list[int], list[int]]:
    """Indices of (train, validation) documents: a document is held out when the hash of its text falls below
    val_fraction, so the split does not depend on order. At least one document lands on each side."""
    hashes = [_doc_hash(t) for t in texts]
    is_val = [h < val_fraction for h in hashes]
    if not any(is_val):  # small corpora: hold out the document with the smallest hash
        is_val[min(range(len(texts)), key=hashes.__getitem__)] = True
    if all(is_val):
        is_val[max(range(len(texts)), key=hashes.__getitem__)] = False
    return [i for i, v in enumerate(is_val) if not v], [i for i, v in enumerate(is_val) if v]


class PackedSequences:
    """Fixed-length token rows, memory-mapped from Arrow IPC shards (no copy until a batch is gathered).
    Shards of prompted rows also hold `fixed`: 1 where a token is a prompt's, never masked."""

    def __init__(self, shard_paths: list[Path], seq_len: int):
        self.seq_len = seq_len
        self._shards, self._fixed = [], []
        for path in shard_paths:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            self._shards.append(table.column("tokens").chunk(0).to_numpy(zero_copy_only=True).reshape(-1, seq_len))
            fixed = table.column("fixed").chunk(0).to_numpy(zero_copy_only=True) if "fixed" in table.column_names \
                else None
            self._fixed.append(None if fixed is None else fixed.reshape(-1, seq_len))
        self._starts = np.cumsum([0] + [len(s) for s in self._shards])
        self.prompted = any(f is not None for f in self._fixed)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _gather(self, arrays, rows, dtype) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        out = np.zeros((len(rows), self.seq_len), dtype=dtype)
        for i, (s, r) in enumerate(zip(shard, rows)):
            if arrays[s] is not None:
                out[i] = arrays[s][r - self._starts[s]]
        return out

    def gather(self, rows) -> torch.Tensor:
        return torch.from_numpy(self._gather(self._shards, rows, np.int64))

    def gather_fixed(self, rows) -> torch.Tensor | None:
        """Which tokens of these rows are never masked (prompts); None when this split has no prompted rows."""
        return torch.from_numpy(self._gather(self._fixed, rows, np.bool_)) if self.prompted else None


@dataclass
class TokenData:
    train: PackedSequences
    val: PackedSequences
    tokenizer: object
    mask_id: int
    meta: dict  # what the cache was built from, token counts, the unigram reference perplexity
    path: Path

    def train_rows(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Rows of the batch for optimizer step `step` (0-based): a fresh permutation per epoch, from the seed."""
        n = len(self.train)
        positions = np.arange(step * batch_size, (step + 1) * batch_size)
        rows = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(positions // n):
            perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
            sel = positions // n == epoch
            rows[sel] = perm[positions[sel] % n]
        return rows

    def require_batch(self, batch_size: int):
        """DataError naming the fix when the train split cannot fill one batch of `batch_size` rows."""
        if len(self.train) < batch_size:
            raise DataError(f"data.corpus: the train split of {self.meta['corpus']} has {len(self.train)} rows of "
                            f"{self.train.seq_len} tokens, fewer than one batch (train.batch_size={batch_size}); "
                            f"use a larger corpus, a shorter seq_len or a smaller batch")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The tokens of step `step`'s batch and which of them are never masked (None: any may be)."""
        rows = self.train_rows(step, batch_size, seed)
        return self.train.gather(rows), self.train.gather_fixed(rows)

    def val_batches(self, n_batches: int, batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Fixed validation batches, rows spread evenly over the validation split (same rows every time), and
        their never-masked tokens batch by batch (None when the split has no prompted rows)."""
        n = min(len(self.val), n_batches * batch_size)
        rows = np.linspace(0, len(self.val) - 1, n).round().astype(np.int64)
        batches = [rows[i:i + batch_size] for i in range(0, n, batch_size)]
        fixed = [self.val.gather_fixed(r) for r in batches] if self.val.prompted else None
        return [self.val.gather(r) for r in batches], fixed


    def answer_positions(self, batches: list[torch.Tensor], fixed: list[torch.Tensor] | None):
        """Per batch, the answer tokens of its prompted rows (neither prompt nor EOS padding): what
        val/answer_loss scores. None when the split has no prompted rows (packed text has no answers)."""
        if fixed is None:
            return None
        eos = self.tokenizer.eos_id
        return [f.any(dim=1, keepdim=True) & ~f & (x != eos) for x, f in zip(batches, fixed)]


def _train_tokenizer(cfg: DataConfig, corpus, train_texts: list[str], root: Path):
    """The run's tokenizer; a BPE is trained on the train split once and shared by every seq_len (cached by the
    corpus, the vocabulary size and the split)."""
    if cfg.tokenizer == "gpt2":
        return tokenizers.GPT2Tokenizer()
    path = root / "tokenizers" / f"bpe-{corpus.fingerprint[:16]}-{cfg.bpe_vocab_size}-{len(train_texts)}.json"
    if not path.exists():
        tokenizers.train_bpe(train_texts, cfg.bpe_vocab_size, path)
    return tokenizers.TrainedBPE(path)


def _open_tokenizer(cfg: DataConfig, path: Path, meta: dict):
    """The tokenizer a cache entry was built with: a BPE's own copy in the entry, so the entry stands alone."""
    tok = tokenizers.GPT2Tokenizer() if cfg.tokenizer == "gpt2" else tokenizers.TrainedBPE(path / BPE_FILE)
    if tok.fingerprint != meta["tokenizer"]:
        raise DataError(f"token cache {path}: built with tokenizer {meta['tokenizer']}, which is not "
                        f"{tok.fingerprint}; delete that folder and it is built again")
    return tok


def _write_split(docs, eos_id: int, seq_len: int, out_dir: Path, split: str) -> list[str]:
    """Pack the documents' token ids (EOS after each) into shards of whole rows; a prompted document (n_fixed >
    0) becomes a row of its own, EOS-padded, after the packed ones. Return the shard file names."""
    shard_len = max(1, SHARD_TOKENS // seq_len) * seq_len
    names, pending, pending_len, prompted = [], [], 0, []

    def flush(tokens: np.ndarray, fixed: np.ndarray | None = None):
        name = f"{split}-{len(names):05d}.arrow"
        columns = {"tokens": pa.array(tokens, type=pa.uint32())}
        if fixed is not None:
            columns["fixed"] = pa.array(fixed, type=pa.uint8())
        table = pa.table(columns)
        with pa.OSFile(str(out_dir / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        names.append(name)

    for batch in docs.iter(batch_size=1024):
        for ids, n_fixed in zip(batch["ids"], batch["n_fixed"] if "n_fixed" in batch else [0] * len(batch["ids"])):
            if n_fixed:
                if len(ids) + 1 > seq_len:
                    raise DataError(f"data.seq_len: a task problem takes {len(ids) + 1} tokens with its EOS, more "
                                    f"than a row of {seq_len}; raise data.seq_len to at least {len(ids) + 1}")
                prompted.append((ids, n_fixed))
                continue
            pending.append(np.asarray(ids + [eos_id], dtype=np.uint32))
            pending_len += len(ids) + 1
            if pending_len >= shard_len:
                buffer = np.concatenate(pending)
                flush(buffer[:shard_len])
                pending, pending_len = [buffer[shard_len:]], len(buffer) - shard_len
    if pending:
        buffer = np.concatenate(pending)
        full = (len(buffer) // seq_len) * seq_len  # the tail shorter than one row is dropped
        if full:
            flush(buffer[:full])
    rows_per_shard = shard_len // seq_len
    for start in range(0, len(prompted), rows_per_shard):
        chunk = prompted[start:start + rows_per_shard]
        tokens = np.full((len(chunk), seq_len), eos_id, dtype=np.uint32)
        fixed = np.zeros((len(chunk), seq_len), dtype=np.uint8)
        for row, (ids, n_fixed) in enumerate(chunk):
            tokens[row, :len(ids)] = ids
            fixed[row, :n_fixed] = 1
        flush(tokens.reshape(-1), fixed.reshape(-1))
    return names


def _unigram_ppl(train: PackedSequences, val: PackedSequences, n_ids: int) -> float:
    """Perplexity of the add-one-smoothed unigram model of the train split, on the validation split: the
    no-context reference a trained model must beat."""
    counts = np.ones(n_ids, dtype=np.float64)
    for shard in train._shards:
        counts += np.bincount(shard.reshape(-1), minlength=n_ids)[:n_ids]
    logp = np.log(counts / counts.sum())
    val_counts = sum(np.bincount(s.reshape(-1), minlength=n_ids)[:n_ids] for s in val._shards)
    return float(np.exp(-(val_counts * logp).sum() / val_counts.sum()))


def load_token_data(cfg: DataConfig) -> TokenData:
    """Tokenize the corpus into the cache if needed, then open it memory-mapped. A cached corpus is opened
    without reading its documents: the key needs only their fingerprint (a sweep opens it in every trial)."""
    root = cache_root(cfg)
    corpus = load_corpus(cfg.corpus, cfg.text_field, cfg.task, cfg.task_problems, cfg.task_format == "prompted")
    tokenizer = "gpt2" if cfg.tokenizer == "gpt2" else f"bpe-{cfg.bpe_vocab_size}"  # a BPE is a function of the rest
    key = hashlib.sha256(json.dumps([CACHE_VERSION, corpus.fingerprint, tokenizer, cfg.seq_len,
                                     cfg.val_fraction]).encode()).hexdigest()[:20]
    path = root / "tokens" / key
    if not (path / "meta.json").exists():
        _build(cfg, corpus, root, path)
    meta = json.loads((path / "meta.json").read_text())
    train = PackedSequences([path / n for n in meta["train_shards"]], cfg.seq_len)
    val = PackedSequences([path / n for n in meta["val_shards"]], cfg.seq_len)
    mask = tokenizers.mask_id(cfg.tokenizer, cfg.bpe_vocab_size)
    return TokenData(train, val, _open_tokenizer(cfg, path, meta), mask, meta, path)


def _tokenize(tok, batch: dict) -> dict:
    """Token ids of a batch of documents; with prompts, the prompt and the rest are encoded apart (as the
    evaluation encodes a prompt alone) and n_fixed counts the prompt's tokens."""
    if "prompt" not in batch:
        return {"ids": tok.encode_batch(batch["text"])}
    prompts = tok.encode_batch(batch["prompt"])
    rests = tok.encode_batch([text[len(prompt):] for text, prompt in zip(batch["text"], batch["prompt"])])
    return {"ids": [p + r for p, r in zip(prompts, rests)], "n_fixed": [len(p) for p in prompts]}


def _build(cfg: DataConfig, corpus, root: Path, path: Path):
    """Split, tokenize and pack the corpus into the cache entry `path`, written whole or not at all."""
    texts = corpus.texts()
    if len(texts) < 2:
        raise DataError(f"data.corpus: {cfg.corpus} has {len(texts)} document; need at least 2 to hold one out "
                        f"for validation (in .txt files, separate documents by blank lines)")
    train_idx, val_idx = split_documents(texts, cfg.val_fraction)
    tok = _train_tokenizer(cfg, corpus, [texts[i] for i in train_idx], root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".building-"))
    try:
        if cfg.tokenizer != "gpt2":
            shutil.copyfile(tok.path, tmp / BPE_FILE)
        tokenized = corpus.documents.map(lambda b: _tokenize(tok, b), batched=True,
                                         remove_columns=corpus.documents.column_names, desc="tokenizing")
        meta = {"corpus": corpus.name, "corpus_sha256": corpus.fingerprint, "tokenizer": tok.fingerprint,
                "seq_len": cfg.seq_len, "val_fraction": cfg.val_fraction,
                "documents": {"train": len(train_idx), "val": len(val_idx)}}
        for split, idx in (("train", train_idx), ("val", val_idx)):
            meta[f"{split}_shards"] = _write_split(tokenized.select(idx), tok.eos_id, cfg.seq_len, tmp, split)
            if not meta[f"{split}_shards"]:
                raise DataError(f"data.corpus: the {split} split of {cfg.corpus} is shorter than one row of "
                                f"data.seq_len={cfg.seq_len} tokens; use a larger corpus or a shorter seq_len")
        train = PackedSequences([tmp / n for n in meta["train_shards"]], cfg.seq_len)
        val = PackedSequences([tmp / n for n in meta["val_shards"]], cfg.seq_len)
        meta["rows"] = {"train": len(train), "val": len(val)}
        meta["unigram_ppl"] = _unigram_ppl(train, val, tokenizers.mask_id(cfg.tokenizer, cfg.bpe_vocab_size))
        del train, val
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, path)  # atomic; another process may have won the race, which is fine
        except OSError:
            if not (path / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
