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


def test_task_accuracy_pipeline_counts_flops(tmp_path):
    import torch

    from loopmdm_core.evaluate import task_accuracy
    from loopmdm_core.model import LoopMDM, ModelConfig
    from loopmdm_core.tokenizer import GPT2Tokenizer

    torch.manual_seed(0)
    tok = GPT2Tokenizer()
    model = LoopMDM(ModelConfig(n_layers=2, d_model=32, n_heads=2, loop_start=0, loop_end=1, n_loops=2,
                                vocab_size=50304))
    problems = tasks.arithmetic(3, "test")
    out = task_accuracy(model, tok, problems, mask_id=50257, answer_tokens=3, n_steps=3)
    assert out["problems"] == 3 and 0.0 <= out["accuracy"] <= 1.0 and out["forward_flops"] > 0
