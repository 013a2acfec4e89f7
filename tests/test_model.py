import copy
import dataclasses

import pytest
import torch

from loopmdm_core import flops
from loopmdm_core.model import LoopMDM, ModelConfig, depth_matched, same_size

CFG = ModelConfig(n_layers=4, d_model=32, n_heads=4, loop_start=1, loop_end=3, n_loops=3, vocab_size=64)


def tokens(batch=2, seq=12, seed=0):
    return torch.randint(0, 63, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_n_loops_1_is_exactly_the_plain_model():
    torch.manual_seed(0)
    looped = LoopMDM(dataclasses.replace(CFG, n_loops=1))
    plain = LoopMDM(dataclasses.replace(CFG, loop_start=0, loop_end=4, n_loops=1))
    plain.load_state_dict(looped.state_dict())
    x = tokens()
    assert torch.equal(looped(x), plain(x))
    assert [i for _, i, _ in looped.applied_layers()] == [0, 1, 2, 3]


def test_loop_equals_unrolled_plain_model_with_copied_layers():
    # An independent construction of the loop: a plain model whose layers are copies in the unrolled order.
    torch.manual_seed(0)
    looped = LoopMDM(CFG)
    order = [0, 1, 2, 1, 2, 1, 2, 3]
    assert [(p, i) for p, i, _ in looped.applied_layers()] == \
        [(None, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (None, 3)]
    unrolled = LoopMDM(depth_matched(CFG))
    assert unrolled.cfg.n_layers == len(order)
    unrolled.embed.load_state_dict(looped.embed.state_dict())
    unrolled.norm.load_state_dict(looped.norm.state_dict())
    unrolled.head.load_state_dict(looped.head.state_dict())
    for target, source in zip(unrolled.layers, order):
        target.load_state_dict(copy.deepcopy(looped.layers[source].state_dict()))
    x = tokens()
    torch.testing.assert_close(looped(x), unrolled(x), rtol=0, atol=0)


def test_n_loops_override_per_call():
    torch.manual_seed(0)
    model = LoopMDM(CFG)
    five = LoopMDM(dataclasses.replace(CFG, n_loops=5))
    five.load_state_dict(model.state_dict())
    x = tokens()
    assert torch.equal(model(x, n_loops=5), five(x))
    assert not torch.allclose(model(x, n_loops=5), model(x))
    with pytest.raises(ValueError):
        model(x, n_loops=0)


def test_applied_layers_are_the_ones_flops_counts():
    model = LoopMDM(CFG)
    for n in (1, 2, 5):
        walk = list(model.applied_layers(n))
        assert len(walk) == CFG.applied_layers(n)
        assert all(block is model.layers[i] for _, i, block in walk)


def test_checkpointed_loops_compute_the_same_values_and_gradients():
    """checkpoint_loops recomputes each pass in backward: the same numbers bit for bit, with and without
    truncated backprop; the backend given at construction is every layer's."""
    torch.manual_seed(0)
    plain = LoopMDM(CFG)
    checkpointed = LoopMDM(CFG, attention_backend="sdpa", checkpoint_loops=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert all(layer.attn.backend == "sdpa" for layer in checkpointed.layers)
    x = tokens()
    for backprop_loops in (0, 1):
        grads = []
        for model in (plain, checkpointed):
            model.zero_grad()
            out = model(x, backprop_loops=backprop_loops)
            out.pow(2).sum().backward()
            grads.append((out.detach(), [p.grad for p in model.parameters() if p.grad is not None]))
        (out_a, grad_a), (out_b, grad_b) = grads
        assert torch.equal(out_a, out_b)
        assert len(grad_a) == len(grad_b) and all(torch.equal(a, b) for a, b in zip(grad_a, grad_b))


def test_run_until_converged_stops_where_the_loop_settles():
    """Whatever the stop, the hidden states are those of a forward pass with that many loops."""
    torch.manual_seed(0)
    model = LoopMDM(CFG).eval()
    x = tokens()
    hidden, loops = model.forward_until_converged(x, tol=0.0, min_loops=1, max_loops=4)
    assert set(loops.tolist()) == {4} and torch.equal(hidden, model(x, n_loops=4))
    hidden, loops = model.forward_until_converged(x, tol=float("inf"), min_loops=2, max_loops=4)
    assert set(loops.tolist()) == {2} and torch.equal(hidden, model(x, n_loops=2))
    # each row stops on its own: a tolerance at the median of the rows' output changes from 2 to 3 loops (close to
    # what the loop measures; the assert below checks that it did split them)
    x = tokens(batch=5)
    with torch.no_grad():
        second, third = model(x, n_loops=2), model(x, n_loops=3)
    change = (third - second).flatten(1).norm(dim=1) / second.flatten(1).norm(dim=1)
    hidden, loops = model.forward_until_converged(x, tol=float(change.median()), min_loops=2, max_loops=4)
    assert len(set(loops.tolist())) > 1
    for row, k in enumerate(loops.tolist()):
        torch.testing.assert_close(hidden[row], model(x[row:row + 1], n_loops=k)[0])


def test_per_row_loop_counts_give_each_row_its_own_forward_pass():
    torch.manual_seed(0)
    model = LoopMDM(CFG).eval()
    x = tokens(batch=5)
    counts = torch.arange(x.shape[0]) % 3 + 1
    hidden = model.forward_per_row(x, counts)
    for row, k in enumerate(counts.tolist()):
        torch.testing.assert_close(hidden[row], model(x[row:row + 1], n_loops=k)[0])


def test_attention_is_bidirectional():
    torch.manual_seed(0)
    model = LoopMDM(CFG)
    x = tokens(batch=1)
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 63
    assert not torch.allclose(model(x)[0, 0], model(y)[0, 0])  # the first position sees the last token


def test_baselines():
    assert same_size(CFG).n_loops == 1 and same_size(CFG).n_layers == CFG.n_layers
    assert flops.num_params(same_size(CFG)) == flops.num_params(CFG)
    deep = depth_matched(CFG)
    assert deep.n_layers == 4 + 2 * 2 and deep.n_loops == 1
    assert flops.forward_flops_per_token(deep, 128) == flops.forward_flops_per_token(CFG, 128)
    assert flops.num_params(deep) > flops.num_params(CFG)


def test_param_count_matches_module():
    for cfg in (CFG, dataclasses.replace(CFG, tie_embeddings=True), depth_matched(CFG)):
        assert flops.num_params(cfg) == LoopMDM(cfg).num_params()


@pytest.mark.parametrize("change, field", [
    (dict(loop_end=5), "model.loop_start/loop_end"),
    (dict(loop_start=2, loop_end=2), "model.loop_start/loop_end"),
    (dict(loop_start=-1), "model.loop_start/loop_end"),
    (dict(n_loops=0), "model.n_loops"),
    (dict(d_model=30), "model.d_model"),
    (dict(attention="xformers"), "model.attention"),
])
def test_invalid_model_configs_name_the_field(change, field):
    problems = dataclasses.replace(CFG, **change).problems()
    assert len(problems) == 1 and problems[0].startswith(field)


def test_residual_stream_in_the_autocast_dtype():
    """Under bf16 autocast every layer gets (and returns) a bf16 residual stream; the output stays close to
    the fp32 model's. Without autocast the stream is fp32."""
    torch.manual_seed(0)
    model = LoopMDM(ModelConfig(n_layers=3, d_model=64, n_heads=4, loop_start=1, loop_end=2, n_loops=2,
                                vocab_size=100))
    seen = []
    for layer in model.layers:
        layer.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    idx = torch.randint(0, 100, (2, 16))
    want = model(idx)
    assert set(seen) == {(torch.float32, torch.float32)}
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(idx)
    assert len(seen) == 4 and set(seen) == {(torch.bfloat16, torch.bfloat16)}
    assert (got.float() - want).norm() / want.norm() < 3e-2


def test_swiglu_blocked_layout_is_silu_gate_times_up():
    """The fused gate/up matmul's outputs alternate in blocks of 64 (gate, up, gate, ...): the layer equals
    silu(x Wg) * (x Wu) Wd with Wg, Wu the alternate blocks of rows, also where d_ff is no multiple of 64."""
    import torch.nn.functional as F

    from loopmdm_core.model import SwiGLU
    for d_ff, block in ((256, 64), (96, 96)):
        torch.manual_seed(0)
        mlp = SwiGLU(ModelConfig(d_model=32, n_heads=2, d_ff=d_ff))
        rows = mlp.w_gate_up_blocked.weight.view(d_ff // block, 2, block, 32)
        w_gate, w_up = rows[:, 0].reshape(d_ff, 32), rows[:, 1].reshape(d_ff, 32)
        x = torch.randn(3, 5, 32)
        want = F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), mlp.w_down.weight)
        torch.testing.assert_close(mlp(x), want)
