import json

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
