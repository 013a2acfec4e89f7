"""Loop counts sampled per training step: the samplers' distributions, their FLOPs against FlopCounterMode
summed over real steps, truncated backprop's gradients against a hand-written reference, and a sampled run's
plan, metrics and bit-identical resume."""

import math

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from loopmdm_core import flops, loop_sampling, metrics
from loopmdm_core.errors import ConfigError
from loopmdm_core.model import LoopMDM, ModelConfig, depth_matched
from loopmdm_core.lr_schedule import lr_at
from loopmdm_core.plan import plan
from loopmdm_core.train import train

from conftest import Recorder

def draws(sampler, seed: int, steps: int) -> np.ndarray:
    return np.array([sampler.draw(seed, s) for s in range(steps)])


CFG = ModelConfig(n_layers=4, d_model=32, n_heads=4, loop_start=1, loop_end=3, n_loops=2, vocab_size=64)


def test_uniform_draws_every_count_equally_and_is_seeded():
    sampler = loop_sampling.parse("uniform:1:4")
    drawn = draws(sampler, seed=3, steps=8000)
    counts = np.bincount(drawn, minlength=5)[1:]
    assert counts.sum() == 8000 and set(drawn) == {1, 2, 3, 4}
    assert np.abs(counts / 8000 - 0.25).max() < 0.02  # 4 sigma of a binomial share at n = 8000 is 0.019
    assert (draws(sampler, 3, 100) == drawn[:100]).all()  # a step's draw depends on (seed, step) alone
    assert not (draws(loop_sampling.parse("uniform:1:4"), 4, 100) == drawn[:100]).all()
    assert sampler.mean(2) == 2.5


def test_poisson_lognormal_has_hugins_mean_and_variance():
    """n = 1 + Poisson(lambda), log lambda ~ N(log(M - 1) - s^2/2, s): E[n] = M and, by the law of total
    variance, Var[n] = E[lambda] + Var[lambda] = (M - 1) + (M - 1)^2 (e^{s^2} - 1)."""
    mean, sigma = 3.0, 0.5
    drawn = draws(loop_sampling.parse(f"poisson_lognormal:{mean}:{sigma}"), seed=0, steps=20000)
    var = (mean - 1) + (mean - 1) ** 2 * (math.exp(sigma ** 2) - 1)
    assert drawn.min() >= 1
    assert abs(drawn.mean() - mean) < 4 * math.sqrt(var / 20000)
    assert abs(drawn.var() - var) / var < 0.1


@pytest.mark.parametrize("spec", ["uniform:0:2", "uniform:3:2", "uniform:1.5:2", "poisson_lognormal:1:0.5",
                                  "poisson_lognormal:3:0", "gaussian:2:1", "fixed:2", "uniform:2"])
def test_bad_sampler_strings_name_the_forms(spec):
    with pytest.raises(ConfigError, match="train.loop_sampling: .* is not one of fixed, uniform:LO:HI"):
        loop_sampling.parse(spec)


def test_depth_matched_rounds_the_mean_depth_half_up():
    assert depth_matched(CFG, mean_loops=2.5).n_layers == 7  # 4 + 2 * 1.5
    assert depth_matched(CFG, mean_loops=2.25).n_layers == 7  # 6.5 -> 7
    assert depth_matched(CFG, mean_loops=2.2).n_layers == 6  # 6.4 -> 6
    assert depth_matched(CFG).n_layers == 6


def counted_step(model, x, n_loops, backprop_loops) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.logits(model(x, n_loops=n_loops, backprop_loops=backprop_loops)).float().pow(2).mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("backprop", [0, 1, 2])
def test_sampled_steps_cost_what_flop_counter_counts(tiny_config, backprop):
    """The plan's cumulative FLOPs, step by step, equal FlopCounterMode summed over real training steps that
    run the plan's sampled loop counts (truncated backprop: only the last passes' backward is counted)."""
    cfg = tiny_config(model={"n_layers": 4, "loop_start": 1, "loop_end": 3, "n_loops": 2, "vocab_size": 384},
                      data={"seq_len": 16},
                      train={"batch_size": 2, "budget_flops": 3e9, "loop_sampling": "uniform:1:4",
                             "loop_backprop": backprop})
    run = plan(cfg)
    assert len(set(run.loops)) > 1
    torch.manual_seed(0)
    model = LoopMDM(run.config.model)
    x = torch.randint(0, 320, (2, 16))
    total = 0
    for step, k in enumerate(run.loops[:12]):
        total += counted_step(model, x, k, backprop)
        assert total == run.flops_after(step + 1)
    # the run stops at the last step the budget pays for
    next_cost = flops.train_flops_per_step(run.config.model, 16, 2, loop_sampling.parse("uniform:1:4").draw(
        cfg.train.seed, run.steps), backprop)
    assert run.total_flops <= cfg.train.budget_flops < run.total_flops + next_cost


def test_truncated_backprop_matches_a_hand_written_reference():
    """Gradients with loop_backprop = 1 of 3 passes: the first two passes as constants added to the stream,
    the last pass differentiated; the layers before the loop still learn through the identity path."""
    torch.manual_seed(0)
    model = LoopMDM(CFG)
    x = torch.randint(0, 64, (2, 8))
    model(x, n_loops=3, backprop_loops=1).pow(2).sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}  # the head is unused
    model.zero_grad()

    cos, sin = model.rope(8, x.device)
    h = model.layers[0](model._embed(x), cos, sin)
    with torch.no_grad():
        frozen = model.layers[2](model.layers[1](model.layers[2](model.layers[1](h, cos, sin), cos, sin), cos, sin),
                                 cos, sin)
    h = h + (frozen - h.detach())
    h = model.layers[2](model.layers[1](h, cos, sin), cos, sin)
    model.norm(model.layers[3](h, cos, sin)).pow(2).sum().backward()
    assert got.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if name in got:
            assert torch.allclose(got[name], p.grad, atol=1e-6, rtol=1e-5), name
    assert got["layers.0.attn.wqkv.weight"].abs().sum() > 0 and got["embed.weight"].abs().sum() > 0
    # backprop through as many passes as run = plain backprop
    model.zero_grad()
    model(x, n_loops=3, backprop_loops=3).pow(2).sum().backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(x, n_loops=3).pow(2).sum().backward()
    assert all(torch.equal(full[n], p.grad) for n, p in model.named_parameters() if n in full)


def test_sampled_run_logs_its_flops_follows_them_in_lr_and_resumes_bit_identically(tiny_config, tmp_path):
    cfg = tiny_config(train={"checkpoint_every": 4, "log_every": 2, "loop_sampling": "uniform:1:3",
                             "budget_flops": 1.2e10, "warmup_frac": 0.2})
    run = plan(cfg)
    assert run.steps > 12 and len(set(run.loops)) == 3
    full = Recorder()
    train(cfg, sink=full, checkpoint_dir=tmp_path / "a")
    for step, values in full.rows.items():
        assert values[metrics.FLOPS] == run.cumulative[step - 1]
        if metrics.TRAIN_LOOPS in values:
            assert values[metrics.TRAIN_LOOPS] == np.mean(run.loops[step - 2:step])
    # the LR schedule reads FLOPs spent: the logged lr of step s is the schedule at the share of FLOPs spent
    # before it, in steps (independently: the warmup is linear in that share)
    last = max(full.rows)
    spent = run.cumulative[last - 2] / run.total_flops
    assert full.rows[last][metrics.LR] == pytest.approx(lr_at(spent * run.steps, run.steps, run.config.train))
    warm = int(0.2 * run.steps)
    s = 2
    assert full.rows[s][metrics.LR] == pytest.approx(cfg.train.lr * (run.cumulative[s - 2] / run.total_flops *
                                                                     run.steps + 1) / warm)
    # evaluations at the first step past each fraction of the FLOPs
    for f in cfg.eval.fractions:
        step = next(i + 1 for i, c in enumerate(run.cumulative) if c >= f * run.total_flops)
        assert metrics.VAL_LOSS in full.rows[step]

    first = Recorder(stop_at=10)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, sink=first, checkpoint_dir=tmp_path / "b")
    second = Recorder()
    result = train(cfg, sink=second, checkpoint_dir=tmp_path / "b")
    assert result.resumed_from == 8
    assert {**first.rows, **second.rows} == full.rows


def test_one_pass_means_every_step_ran_one_pass():
    """What evaluations and the report key on to score a baseline at its one pass only."""
    assert loop_sampling.trains_one_pass(1, "fixed") and loop_sampling.trains_one_pass(3, "uniform:1:1")
    assert not loop_sampling.trains_one_pass(2, "fixed")
    assert not loop_sampling.trains_one_pass(1, "uniform:1:3")  # validates at 1, but trained to loop
    assert not loop_sampling.trains_one_pass(1, "poisson_lognormal:2:0.5")
