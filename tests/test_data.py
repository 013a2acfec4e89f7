import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopmdm_core.config import DataConfig
from loopmdm_core.data import load_token_data, split_documents
from loopmdm_core.errors import DataError
from loopmdm_core.tokenizer import GPT2Tokenizer

from conftest import make_documents


def test_gpt2_tokenizer_offline_gives_gpt2_ids():
    tok = GPT2Tokenizer()
    assert tok.encode_batch(["hello world"]) == [[31373, 995]]
    assert tok.decode([31373, 995]) == "hello world"


def test_cache_is_built_once_and_rows_are_packed(tiny_corpus, cache_dir):
    cfg = DataConfig(corpus=tiny_corpus, bpe_vocab_size=320, seq_len=32, cache_dir=cache_dir, val_fraction=0.2)
    first = load_token_data(cfg)
    shard = first.path / first.meta["train_shards"][0]
    mtime = shard.stat().st_mtime_ns
    again = load_token_data(cfg)
    assert again.path == first.path and shard.stat().st_mtime_ns == mtime  # read back, not rebuilt
    assert first.meta["documents"]["train"] + first.meta["documents"]["val"] == 24
    assert first.meta["documents"]["val"] >= 1
    batch, fixed = first.train_batch(0, 8, seed=0)
    assert batch.shape == (8, 32) and int(batch.max()) < first.mask_id
    assert fixed is None and first.val_batches(2, 4)[1] is None  # plain text: every token may be masked
    # Packed: the rows of a shard are the document stream cut every seq_len tokens, EOS between documents.
    stream = np.concatenate([s.reshape(-1) for s in first.train._shards])
    assert (stream == first.tokenizer.eos_id).sum() >= first.meta["documents"]["train"] - 1
    assert set(first.tokenizer.decode(first.train.gather([0])[0].tolist()).split()) & {"the", "king", "my"}
    assert first.meta["unigram_ppl"] > 1
    # A change of seq_len is a different cache entry.
    other = load_token_data(DataConfig(corpus=tiny_corpus, bpe_vocab_size=320, seq_len=16, cache_dir=cache_dir,
                                       val_fraction=0.2))
    assert other.path != first.path and len(other.train) > len(first.train)


def test_batches_are_a_function_of_seed_and_step(tiny_corpus, cache_dir):
    data = load_token_data(DataConfig(corpus=tiny_corpus, bpe_vocab_size=320, seq_len=32, cache_dir=cache_dir,
                                      val_fraction=0.2))
    n = len(data.train)
    assert np.array_equal(data.train_rows(5, 8, seed=1), data.train_rows(5, 8, seed=1))
    assert not np.array_equal(data.train_rows(5, 8, seed=1), data.train_rows(5, 8, seed=2))
    # One epoch visits every row exactly once.
    steps = n // 8
    seen = np.concatenate([data.train_rows(s, 8, seed=0) for s in range(steps)])
    assert len(set(seen.tolist())) == len(seen) == steps * 8
    (vb1, _), (vb2, _) = data.val_batches(2, 4), data.val_batches(2, 4)
    assert all((a == b).all() for a, b in zip(vb1, vb2))


def test_split_is_by_document_and_ignores_order():
    docs = make_documents(200, 20, seed=3)
    train, val = split_documents(docs, 0.25)
    assert sorted(train + val) == list(range(200)) and 30 < len(val) < 70
    train_r, val_r = split_documents(docs[::-1], 0.25)
    assert {docs[i] for i in val} == {docs[::-1][i] for i in val_r}
    assert split_documents(docs[:3], 0.01)[1] and split_documents(docs[:3], 0.99)[0]  # never an empty side


def test_txt_and_parquet_corpora(tmp_path, cache_dir):
    docs = make_documents(10, 150, seed=4)
    (tmp_path / "t.txt").write_text("\n\n".join(docs))
    pq.write_table(pa.table({"body": docs}), tmp_path / "p.parquet")
    for corpus, field in ((tmp_path / "t.txt", "text"), (tmp_path / "p.parquet", "body")):
        data = load_token_data(DataConfig(corpus=str(corpus), text_field=field, tokenizer="gpt2", seq_len=16,
                                          cache_dir=cache_dir, val_fraction=0.2))
        assert data.meta["documents"]["train"] + data.meta["documents"]["val"] == 10


def test_bad_corpora(tmp_path, cache_dir):
    def load(corpus, **kw):
        return load_token_data(DataConfig(corpus=str(corpus), tokenizer="gpt2", seq_len=16, cache_dir=cache_dir, **kw))

    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown built-in corpus"):
        load("builtin:nope")
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "only one document"}) + "\n")
    with pytest.raises(DataError, match="need at least 2"):
        load(one)
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "a b"}) + "\n" + json.dumps({"text": "c d"}) + "\n")
    with pytest.raises(DataError, match="shorter than one row"):
        load(short)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="no string field 'text'"):
        load(wrong)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"\n')
    with pytest.raises(DataError, match="broken.jsonl:1: not valid JSON"):
        load(broken)


def test_a_cached_corpus_opens_without_its_documents(cache_dir, monkeypatch):
    """A sweep opens the token cache in every trial: once built, neither a task's problems are generated again
    nor the corpus read (for the positive control's 200,000 problems that took 18 s on a 2-core CPU)."""
    from loopmdm_core import corpus, tasks
    cfg = DataConfig(corpus="none", task="arithmetic:2", task_problems=300, task_format="prompted",
                     bpe_vocab_size=300, seq_len=16, cache_dir=cache_dir)
    first = load_token_data(cfg)

    def forbidden(*args, **kwargs):
        raise AssertionError("read the documents of a cached corpus")

    monkeypatch.setattr(tasks, "documents", forbidden)
    monkeypatch.setattr(corpus, "_read_file", forbidden)
    again = load_token_data(cfg)
    assert again.path == first.path and again.meta == first.meta
    assert again.tokenizer.encode_batch(["12+34="]) == first.tokenizer.encode_batch(["12+34="])
    assert np.array_equal(again.train_batch(3, 8, seed=0)[0], first.train_batch(3, 8, seed=0)[0])
    with pytest.raises(AssertionError, match="read the documents"):  # a new entry must read them
        load_token_data(dataclasses.replace(cfg, seq_len=24))


def test_a_cache_entry_stands_alone_and_checks_its_tokenizer(tiny_corpus, tmp_path):
    cache_dir = tmp_path / "own_cache"  # this test damages its entry: never the cache other tests share
    cfg = DataConfig(corpus=tiny_corpus, bpe_vocab_size=320, seq_len=32, cache_dir=str(cache_dir), val_fraction=0.2)
    first = load_token_data(cfg)
    shutil.rmtree(cache_dir / "tokenizers")  # the shared BPE is gone; the entry keeps its own copy
    assert load_token_data(cfg).tokenizer.fingerprint == first.meta["tokenizer"]
    (first.path / "tokenizer.json").write_text((first.path / "tokenizer.json").read_text().replace('"<', '"<x'))
    with pytest.raises(DataError, match="delete that folder"):
        load_token_data(cfg)


def test_what_picks_the_text_is_part_of_the_cache_key(tmp_path, cache_dir):
    """A jsonl's text_field and a GSM8K file's contents decide the documents, so they decide the entry."""
    docs = make_documents(10, 150, seed=5)
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps({"text": d, "other": d.upper()}) + "\n" for d in docs))
    by_field = {f: load_token_data(DataConfig(corpus=str(path), text_field=f, tokenizer="gpt2", seq_len=16,
                                              cache_dir=cache_dir, val_fraction=0.2)) for f in ("text", "other")}
    assert by_field["text"].path != by_field["other"].path
    assert by_field["other"].tokenizer.decode(by_field["other"].train.gather([0])[0].tolist()).isupper()

    gsm = tmp_path / "gsm8k.jsonl"

    def write(n: int):
        gsm.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}) + "\n"
                               for i in range(n)))

    def load():
        return load_token_data(DataConfig(corpus="none", task=f"gsm8k:{gsm}", task_format="prompted",
                                          tokenizer="gpt2", seq_len=32, cache_dir=cache_dir, val_fraction=0.2))

    write(20)
    before = load()
    write(30)  # the same spec, other problems
    after = load()
    assert after.path != before.path
    assert sum(after.meta["documents"].values()) == 30 and sum(before.meta["documents"].values()) == 20
