import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from loopmdm_core import schedules
from loopmdm_core.checkpoint import load_model
from loopmdm_core.errors import ConfigError
from loopmdm_core.model import LoopMDM
from loopmdm_core.sample import sample
from loopmdm_core.tokenizer import mask_id as mask_id_of
from loopmdm_core.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_corpus, cache_dir):
    from loopmdm_core.config import load_run_config
    cfg = load_run_config({
        "model": {"n_layers": 3, "d_model": 32, "n_heads": 2, "loop_start": 1, "loop_end": 2, "n_loops": 2},
        "data": {"corpus": tiny_corpus, "bpe_vocab_size": 320, "seq_len": 32, "cache_dir": cache_dir,
                 "val_fraction": 0.2},
        "train": {"budget_flops": 3e9, "batch_size": 8}, "eval": {"fractions": [1.0], "n_batches": 1}})
    folder = tmp_path_factory.mktemp("model")
    train(cfg, checkpoint_dir=folder)
    model, config = load_model(folder)
    return model, mask_id_of("bpe", 320)


def kwargs(mask, **extra):
    return {"batch_size": 3, "length": 24, "mask_id": mask, "n_tokens": mask, "n_steps": 8, "seed": 1, **extra}


@pytest.mark.parametrize("method", ["ancestral", "confidence"])
@pytest.mark.parametrize("block_size", [None, 8])
def test_samples_are_complete_prompted_and_seeded(trained, method, block_size):
    model, mask = trained
    prompt = torch.tensor([5, 17, 42])
    a = sample(model, **kwargs(mask, method=method, prompt=prompt, block_size=block_size))
    assert a.tokens.shape == (3, 24)
    assert not (a.tokens == mask).any() and int(a.tokens.max()) < mask
    assert (a.tokens[:, :3] == prompt).all()
    b = sample(model, **kwargs(mask, method=method, prompt=prompt, block_size=block_size))
    assert torch.equal(a.tokens, b.tokens) and a.flops == b.flops
    c = sample(model, **kwargs(mask, method=method, prompt=prompt, block_size=block_size, seed=2))
    assert not torch.equal(a.tokens, c.tokens)


def test_one_loop_everywhere_is_the_plain_sampler(trained):
    model, mask = trained
    plain = LoopMDM(dataclasses.replace(model.cfg, loop_start=0, loop_end=model.cfg.n_layers, n_loops=1)).eval()
    plain.load_state_dict(model.state_dict())
    looped = sample(model, **kwargs(mask, schedule=schedules.parse("fixed:1")))
    reference = sample(plain, **kwargs(mask))
    assert torch.equal(looped.tokens, reference.tokens) and looped.flops == reference.flops


@pytest.mark.parametrize("spec", ["fixed:2", "ramp:4:1", "confidence:1:3:0.5", "convergence:1e-3:1:6"])
def test_flops_equal_the_sum_over_network_calls(trained, spec):
    model, mask = trained
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        result = sample(model, **kwargs(mask, schedule=schedules.parse(spec), n_steps=6))
    assert result.flops == counter.get_total_flops()
    loops = [k for call in result.loops for k in call]
    assert 1 <= result.calls <= 6 and all(k >= 1 for k in loops)
    if spec == "ramp:4:1":
        assert set(result.loops[0]) == {4} and set(result.loops[-1]) == {1}
    if spec.startswith("convergence"):
        assert all(1 <= k <= 6 for k in loops)


def test_unchanged_tokens_skip_the_network_call(trained):
    model, mask = trained
    # 64 ancestral steps over 6 positions: most steps reveal nothing, and those reuse the last prediction.
    result = sample(model, **kwargs(mask, length=6, n_steps=64))
    assert result.calls < 64 and not (result.tokens == mask).any()


def test_schedule_strings():
    unknown = torch.full((3,), float("nan"), dtype=torch.float64)
    assert schedules.parse("table:3,2,1")(0, 6, unknown) == 3 and schedules.parse("table:3,2,1")(5, 6, unknown) == 1
    conf = schedules.parse("confidence:1:4:0.8")  # per row: unsure (or not known yet) -> 4, sure -> 1
    assert conf(0, 4, unknown).tolist() == [4, 4, 4]
    assert conf(1, 4, torch.tensor([0.5, float("nan"), 0.9], dtype=torch.float64)).tolist() == [4, 4, 1]
    for bad in ("fixed", "fixed:0", "ramp:2", "convergence:0.1:5:2", "adaptive:3", "table:2,x"):
        with pytest.raises(ConfigError, match="loop schedule"):
            schedules.parse(bad)


class _SeesConfidence:
    """Three loops at every call, keeping the per-row confidence each call was given."""

    def __init__(self):
        self.seen = []

    def __call__(self, step, n_steps, confidence):
        self.seen.append(confidence.clone())
        return 3


@pytest.mark.parametrize("kind", ["confidence", "convergence", "ramp"])
def test_a_batch_gets_the_answers_its_rows_get_alone(trained, kind):
    """Per-row loop counts: a batch's tokens, loops and FLOPs are those of its rows sampled one at a time (greedy),
    and with an adaptive schedule the rows of one call do loop differently (or this would test nothing)."""
    model, mask = trained
    prompts = torch.tensor([[5, 17, 42], [9, 3, 60], [71, 71, 2], [33, 8, 15]])
    kw = {"length": 14, "mask_id": mask, "n_tokens": mask, "n_steps": 6, "method": "confidence", "temperature": 0.0}
    if kind == "confidence":  # the threshold splits the rows' confidences after the first call (a barely trained
        seen = _SeesConfidence()  # model: all of them near 1/320)
        sample(model, batch_size=4, prompt=prompts, schedule=seen, **kw)
        low, high = seen.seen[1].sort().values[1:3].tolist()
        schedule = schedules.ByConfidence(1, 3, (low + high) / 2)
    else:
        schedule = schedules.parse({"convergence": "convergence:0.3:1:4", "ramp": "ramp:3:1"}[kind])
    together = sample(model, batch_size=4, prompt=prompts, schedule=schedule, **kw)
    alone = [sample(model, batch_size=1, prompt=p[None], schedule=schedule, **kw) for p in prompts]
    assert torch.equal(together.tokens, torch.cat([a.tokens for a in alone]))
    assert together.flops == sum(a.flops for a in alone)
    per_row = [[call[i] for call in together.loops] for i in range(4)]  # every row is computed at every call here
    assert per_row == [[k for (k,) in a.loops] for a in alone]
    if kind != "ramp":
        assert any(len(set(call)) > 1 for call in together.loops)


def test_loop_scaling_scores_each_loop_count(trained, tiny_corpus, cache_dir):
    from loopmdm_core import diffusion
    from loopmdm_core.config import DataConfig
    from loopmdm_core.data import load_token_data
    from loopmdm_core.evaluate import loop_scaling
    model, mask = trained
    data = load_token_data(DataConfig(corpus=tiny_corpus, bpe_vocab_size=320, seq_len=32, cache_dir=cache_dir,
                                      val_fraction=0.2))
    batches, _ = data.val_batches(2, 4)
    rows = loop_scaling(model, batches, mask, loops=[1, 2, 4], n_t=4)
    assert [r["n_loops"] for r in rows] == [1, 2, 4]
    assert rows[1]["val_loss"] == diffusion.validation_elbo(model, batches, mask, 4, 1234)  # the trained count
    assert len({r["val_loss"] for r in rows}) == 3
    flops_per_token = [r["forward_flops_per_token"] for r in rows]
    assert flops_per_token == sorted(flops_per_token) and flops_per_token[0] < flops_per_token[2]
