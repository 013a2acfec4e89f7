"""The FLOPs formula of flops.py against torch's own FlopCounterMode, forward and training, loops unrolled.

SDPA is forced onto its math backend, which torch decomposes into the bmm calls FlopCounterMode counts (the
fused CPU kernel is not counted at all). With that, the formula is exact: the difference is 0.
"""

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from loopmdm_core import flops
from loopmdm_core.model import LoopMDM, ModelConfig, depth_matched, same_size

BASE = ModelConfig(n_layers=4, d_model=64, n_heads=4, loop_start=1, loop_end=3, n_loops=3, vocab_size=128)
CONFIGS = {
    "looped": BASE,
    "same_size": same_size(BASE),
    "depth_matched": depth_matched(BASE),
    "whole_stack_x4": dataclasses.replace(BASE, loop_start=0, loop_end=4, n_loops=4),
    "last_layer_x2_tied_wide_ff": dataclasses.replace(BASE, loop_start=3, loop_end=4, n_loops=2, d_ff=320,
                                                      tie_embeddings=True),
}


def counted(model: LoopMDM, x: torch.Tensor, backward: bool) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model.logits(model(x))
        if backward:
            out.float().pow(2).mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seq_len", [16, 48])
def test_formula_matches_flop_counter(name, seq_len):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    model = LoopMDM(cfg)
    batch = 3
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    tokens = batch * seq_len
    assert counted(model, x, backward=False) == flops.forward_flops_per_token(cfg, seq_len) * tokens
    assert counted(model, x, backward=True) == flops.train_flops_per_step(cfg, seq_len, batch)


def test_inference_override_counts_the_loops_it_runs():
    torch.manual_seed(0)
    model = LoopMDM(BASE)
    x = torch.randint(0, 128, (2, 16))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.logits(model(x, n_loops=6))
    assert counter.get_total_flops() == flops.forward_flops_per_token(BASE, 16, n_loops=6) * 32


def test_budget_buys_whole_steps():
    assert flops.steps_for_budget(10.0 * 7 + 6.9, 7) == 10
    assert flops.steps_for_budget(6.0, 7) == 0
