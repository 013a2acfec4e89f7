import json
from dataclasses import astuple

import pytest

from loopmdm_core import tasks
from loopmdm_core.errors import DataError


def test_checker_on_known_answers():
    p = tasks.Problem("12+34=", "46")
    assert tasks.is_correct("46", p) and tasks.is_correct("46\n7+1=8", p) and tasks.is_correct(" 46.", p)
    assert not tasks.is_correct("45", p) and not tasks.is_correct("", p) and not tasks.is_correct("forty-six", p)
    assert tasks.is_correct("-7", tasks.Problem("3-10=", "-7")) and not tasks.is_correct("7", tasks.Problem("3-10=", "-7"))
    assert tasks.extract_answer("so it is 1,234 in all") == "1234"


def test_arithmetic_is_seeded_correct_and_split_disjoint():
    train = tasks.arithmetic(300, "train", seed=1)
    test = tasks.arithmetic(100, "test", seed=1)
    assert train == tasks.arithmetic(300, "train", seed=1)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    for p in train[:50] + test[:50]:
        a, op, b = p.prompt[:2], p.prompt[2], p.prompt[3:5]
        assert int(p.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    with pytest.raises(DataError, match="distinct"):
        tasks.arithmetic(10_000, "test", digits=1)


def test_gsm8k_reader_and_task_specs(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "Tom has 3 apples and buys 1,200 more. How many?",
                                "answer": "3 + 1200 = 1203\n#### 1,203"}) + "\n")
    [p] = tasks.read_gsm8k(path)
    assert p.answer == "1203" and p.prompt.startswith("Question: Tom")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        tasks.read_gsm8k(bad)
    assert tasks.problems(f"gsm8k:{path}", "test", 0) == [p]
    texts, prompts = tasks.documents("arithmetic:3", 5)
    first = tasks.arithmetic(1, "train", digits=3)[0]
    assert texts[0] == "{}{}".format(*astuple(first)) and prompts[0] == first.prompt
    for bad in ("arithmetic:0", "arithmetic:x", "gsm8k", "gsm8k:", "sudoku"):
        with pytest.raises(DataError, match="expected arithmetic"):
            tasks.parse_spec(bad)
    with pytest.raises(DataError, match="is not a file"):
        tasks.problems(f"gsm8k:{tmp_path / 'none.jsonl'}", "test", 0)


def test_task_mixed_into_the_corpus(tiny_config):
    """data.task adds one document per train problem (answers included, test problems never); corpus none
    trains on the task alone. Digits are single tokens, so numbers are learnable digit by digit."""
    from loopmdm_core.data import load_token_data
    plain = load_token_data(tiny_config().data)
    mixed = load_token_data(tiny_config(data={"task": "arithmetic", "task_problems": 400, "task_format": "text"}).data)
    alone = load_token_data(tiny_config(data={"corpus": "none", "task": "arithmetic", "task_problems": 400,
                                              "task_format": "text"}).data)
    assert len({plain.path, mixed.path, alone.path}) == 3  # each its own cache entry
    docs = mixed.meta["documents"]
    assert docs["train"] + docs["val"] == plain.meta["documents"]["train"] + plain.meta["documents"]["val"] + 400
    assert alone.meta["documents"]["train"] + alone.meta["documents"]["val"] == 400
    text = alone.tokenizer.decode(alone.train.gather(range(len(alone.train))).reshape(-1).tolist())
    train_prompts = {p.prompt for p in tasks.arithmetic(400, "train")}
    assert sum(p.prompt + p.answer in text for p in tasks.arithmetic(400, "train")) > 300  # rows cut the rest
    assert not any(p.prompt in train_prompts for p in tasks.arithmetic(100, "test"))
    ids = alone.tokenizer.encode_batch(["12+345=357"])[0]
    assert [alone.tokenizer.decode([i]) for i in ids] == list("12+345=357")
    assert alone.train_batch(0, 4, seed=0)[1] is None  # text format: packed, every token maskable


def test_prompted_task_rows(tiny_config):
    """task_format prompted: one problem per row, its prompt tokens flagged fixed (never masked), then the
    answer and EOS to the end of the row; mixed with a corpus, the corpus stays packed and unflagged."""
    import torch

    from loopmdm_core import diffusion
    from loopmdm_core.data import load_token_data
    data = load_token_data(tiny_config(data={"corpus": "none", "task": "arithmetic", "task_problems": 300,
                                             "seq_len": 12}).data)
    tok, eos = data.tokenizer, data.tokenizer.eos_id
    by_prompt = {p.prompt: p.answer for p in tasks.arithmetic(300, "train")}
    x, fixed = data.train_batch(0, 64, seed=0)
    assert x.shape == fixed.shape == (64, 12)
    for row, flags in zip(x.tolist(), fixed.tolist()):
        n = sum(flags)
        assert flags == [True] * n + [False] * (12 - n)  # the prompt is the row's head
        prompt = tok.decode(row[:n])
        answer_ids = row[n:row.index(eos)]
        assert by_prompt[prompt] == tok.decode(answer_ids)  # the row's answer is its prompt's
        assert set(row[row.index(eos):]) == {eos}  # EOS pads the rest
    assert len(data.val_batches(2, 8)[1]) == 2
    # The noise never masks a prompt token, even at t = 1, where it masks every other token.
    xt, masked = diffusion.mask_tokens(x, torch.ones(64), data.mask_id, torch.Generator().manual_seed(0),
                                       fixed)
    assert not masked[fixed].any() and masked[~fixed].all() and (xt[fixed] == x[fixed]).all()
    # Mixed into a corpus: the corpus rows stay packed text, nothing of them fixed.
    mixed = load_token_data(tiny_config(data={"task": "arithmetic", "task_problems": 300, "seq_len": 12}).data)
    rows = range(len(mixed.train))
    flags = mixed.train.gather_fixed(rows)
    assert 0 < int(flags.any(1).sum()) < len(mixed.train)  # some rows are problems, the others text
    with pytest.raises(DataError, match="data.seq_len"):
        load_token_data(tiny_config(data={"corpus": "none", "task": "arithmetic:4", "task_problems": 50,
                                          "seq_len": 8}).data)


def _oracle(tokenizer, scripts: dict[str, list[int]]):
    """A stand-in for LoopMDM that knows the answers: for a row whose head is one of the `scripts`' prompts it
    puts all probability on that script (token ids after the prompt), whatever is still masked."""
    import torch

    from loopmdm_core.model import ModelConfig

    class Oracle(torch.nn.Module):
        cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, loop_start=0, loop_end=1, n_loops=2, vocab_size=50304)

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # sample() reads the device off a parameter
            self.scripts = [(tokenizer.encode_batch([prompt])[0], ids) for prompt, ids in scripts.items()]

        def forward(self, x, n_loops=None):
            return x

        def logits(self, x):
            out = torch.zeros(*x.shape, self.cfg.vocab_size)
            for r, row in enumerate(x.tolist()):
                prompt, script = next((p, s) for p, s in self.scripts if row[:len(p)] == p)
                for j, token in enumerate(script[:len(row) - len(prompt)]):
                    out[r, len(prompt) + j, token] = 50.0
            return out

    return Oracle()


def test_task_accuracy_is_exact_match_cut_at_the_end_of_document():
    """Known answers: an oracle answers four problems right; wrong; end of document then the right answer (cut:
    wrong); right, end of document, then junk digits (right). Accuracy 2/4 at any batch size, and the FLOPs are
    the per-token forward cost x tokens, summed over calls: one call per answer token (one revealed a step)."""
    from loopmdm_core import flops
    from loopmdm_core.evaluate import task_accuracy
    from loopmdm_core.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    eos, n = tok.eos_id, 4  # n: answer tokens generated, and denoising steps
    problems = tasks.arithmetic(4, "test")
    enc = lambda text: tok.encode_batch([text])[0]
    scripts = {problems[0].prompt: enc(problems[0].answer) + [eos] * n,
               problems[1].prompt: enc(str(int(problems[1].answer) + 1)) + [eos] * n,
               problems[2].prompt: [eos] + enc(problems[2].answer) + [eos] * n,
               problems[3].prompt: enc(problems[3].answer) + [eos] + enc("7") * n}
    model = _oracle(tok, scripts)
    lengths = [len(enc(p.prompt)) + n for p in problems]
    expected_flops = sum(n * flops.forward_flops_per_token(model.cfg, length, 2) * length for length in lengths)
    for batch_size in (1, 4):
        out = task_accuracy(model, tok, problems, mask_id=50257, answer_tokens=n, n_steps=n, batch_size=batch_size)
        assert out == {"accuracy": 0.5, "problems": 4, "forward_flops": expected_flops}, batch_size
    every = _oracle(tok, {p.prompt: enc(p.answer) + [eos] * n for p in problems})
    assert task_accuracy(every, tok, problems, mask_id=50257, answer_tokens=n, n_steps=n)["accuracy"] == 1.0


def _hops_by_hand(seq: str, hops: int) -> str | None:
    """p-hop written out: from the last position, scan left for the same letter, step right past it."""
    pos = len(seq) - 1
    for _ in range(hops):
        back = pos - 1
        while back >= 0 and seq[back] != seq[pos]:
            back -= 1
        if back < 0:
            return None
        pos = back + 1
    return seq[pos]


def test_phop_answers_splits_and_specs():
    assert tasks.phop_answer("abcab", 1) == "c"  # last b -> the b at 1 -> c
    assert tasks.phop_answer("abcab", 2) is None  # ... then the c at 2 has no earlier c
    assert tasks.phop_answer("abcabc", 3) is None
    train = tasks.problems("phop:3:20:5", "train", 400, seed=2)
    test = tasks.problems("phop:3:20:5", "test", 100, seed=2)
    assert train == tasks.problems("phop:3:20:5", "train", 400, seed=2)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    for p in train + test:
        seq = p.prompt[:-1]
        assert p.prompt.endswith("=") and len(seq) == 20 and set(seq) <= set("abcde")
        assert p.answer == _hops_by_hand(seq, 3)
    answers = [p.answer for p in train]
    assert all(answers.count(c) > 40 for c in "abcde")  # no letter is a shortcut: roughly uniform
    assert tasks.is_correct("c", tasks.Problem("x=", "c")) and not tasks.is_correct("cc", tasks.Problem("x=", "c"))
    assert tasks.parse_spec("phop:4") == ("phop", "4") and len(tasks.problems("phop:4", "test", 2)[0].prompt) == 49
    for bad in ("phop", "phop:0", "phop:8:8", "phop:2:16:1", "phop:2:16:27", "phop:x", "phop:1:2:3:4"):
        with pytest.raises(DataError, match=r"phop:HOPS\[:LENGTH\[:ALPHABET\]\]"):
            tasks.parse_spec(bad)


def test_phop_is_learnable_on_a_cpu(tiny_config):
    """The positive control's CI check: a 2-layer model learns 1-hop induction over 16 letters (chance 1/4) in
    about half a minute on 2 cores; val/accuracy is scored on held-out problems, val/answer_loss on answer
    tokens only. Measured on the 2-core CI machine kind: 0.695 held-out accuracy and 0.686 nats at 1e12."""
    import math

    from loopmdm_core import metrics
    from loopmdm_core.train import train
    cfg = tiny_config(model={"n_layers": 2, "d_model": 64, "n_heads": 4, "loop_start": 0, "loop_end": 2,
                             "n_loops": 1},
                      data={"corpus": "none", "task": "phop:1:16", "task_problems": 20000, "bpe_vocab_size": 257,
                            "seq_len": 20},
                      train={"budget_flops": 1e12, "batch_size": 64, "lr": 3e-3, "log_every": 100},
                      eval={"fractions": [0.1, 1.0], "task_problems": 200, "n_batches": 4, "batch_size": 16,
                            "n_t": 8})
    rows = {}
    train(cfg, sink=lambda step, values: rows.update({step: values}))
    evals = sorted(s for s in rows if metrics.VAL_ACCURACY in rows[s])
    first, last = rows[evals[0]], rows[evals[-1]]
    assert last[metrics.VAL_ACCURACY] >= 0.5 > first[metrics.VAL_ACCURACY]  # chance is 0.25 (+- 0.06 at n=200)
    assert last[metrics.VAL_ANSWER_LOSS] < 0.8 * math.log(4) < first[metrics.VAL_ANSWER_LOSS]
    # the prompt and the EOS padding make the all-token loss a small fraction of the answer loss
    assert last[metrics.VAL_LOSS] < 0.2 * last[metrics.VAL_ANSWER_LOSS]
