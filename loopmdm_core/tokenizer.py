"""Tokenizers: GPT-2's BPE (tiktoken, from the shipped ranks file) or a small byte-level BPE trained on the corpus.

Each exposes `encode_batch`, `decode`, `n_tokens` (ids the tokenizer can emit), `eos_id` (document
separator) and `fingerprint` (identity for the token cache). The model's mask token is id `n_tokens`.
"""

import hashlib
import os
import tempfile
from pathlib import Path

from .corpus import ASSETS

EOS = "<|endoftext|>"
# GPT-2's pre-tokenization pattern (tiktoken's r50k_base).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class GPT2Tokenizer:
    def __init__(self):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
        path = ASSETS / "gpt2.tiktoken"
        self._enc = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(path)),
                                      special_tokens={EOS: 50256})
        self.n_tokens, self.eos_id = 50257, 50256
        self.fingerprint = "gpt2-tiktoken-r50k"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts)

    def decode(self, ids) -> str:
        return self._enc.decode([i for i in ids if i < self.n_tokens])


class TrainedBPE:
    """A byte-level BPE (HF `tokenizers`) trained on the corpus, cached as JSON beside the token shards."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer
        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(path))
        self.n_tokens = self._tok.get_vocab_size()
        self.eos_id = self._tok.token_to_id(EOS)
        self.fingerprint = "bpe-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode([i for i in ids if i < self.n_tokens])


def train_bpe(texts, vocab_size: int, path: Path) -> Path:
    """Train a byte-level BPE of `vocab_size` ids (EOS included) on `texts`; write it atomically to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    # Digits one by one (as LLaMA does): numbers keep one token per digit whatever the corpus, so arithmetic
    # is learnable digit by digit and "1234" never becomes a token the model must memorise.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return path


def mask_id(tokenizer_name: str, bpe_vocab_size: int) -> int:
    """The mask token's id: one past the ids the tokenizer may emit (a trained BPE may emit fewer)."""
    return 50257 if tokenizer_name == "gpt2" else bpe_vocab_size


def model_vocab_size(tokenizer_name: str, bpe_vocab_size: int) -> int:
    """Embedding/head rows: the tokenizer's ids + the mask token, padded to a multiple of 64 for fast matmuls."""
    return 64 * ((mask_id(tokenizer_name, bpe_vocab_size) + 1 + 63) // 64)
