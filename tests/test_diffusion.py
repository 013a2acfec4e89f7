import math

import pytest
import torch

from loopmdm_core import diffusion
from loopmdm_core.model import LoopMDM, ModelConfig

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=2, loop_start=0, loop_end=1, n_loops=2, vocab_size=64)
MASK = 60


def slow_elbo(model, x, xt, t):
    """The ELBO term written out: for each row and masked position, -log softmax(full logits)[target] / t."""
    logits = model.logits(model(xt)).double()
    total = 0.0
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            if xt[b, i] == MASK:
                row = logits[b, i]
                log_z = math.log(sum(math.exp(v) for v in row.tolist()))
                total += (log_z - row[x[b, i]].item()) / t[b].item()
    return total / x.numel()


def test_loss_matches_slow_independent_computation():
    torch.manual_seed(0)
    model = LoopMDM(CFG)
    x = torch.randint(0, MASK, (4, 10), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(7)
    loss = diffusion.elbo_loss(model, x, MASK, gen)
    # Replay the same draws to recover t and the masks the loss used.
    gen = torch.Generator().manual_seed(7)
    t = diffusion.antithetic_t(4, gen)
    xt, masked = diffusion.mask_tokens(x, t, MASK, gen)
    assert masked.any() and not masked.all()
    assert math.isclose(loss.item(), slow_elbo(model, x, xt, t), rel_tol=1e-5)


def test_prompted_loss_scores_only_the_unfixed_tokens():
    """With the first 4 tokens of each row fixed (a prompt), the loss is the slow ELBO over the masks the same
    draws give the other tokens: fixed tokens are never masked, never scored, and cost no draw of their own."""
    torch.manual_seed(0)
    model = LoopMDM(CFG)
    x = torch.randint(0, MASK, (4, 10), generator=torch.Generator().manual_seed(1))
    fixed = torch.zeros(4, 10, dtype=torch.bool)
    fixed[:, :4] = True
    loss = diffusion.elbo_loss(model, x, MASK, torch.Generator().manual_seed(7), fixed=fixed)
    gen = torch.Generator().manual_seed(7)
    t = diffusion.antithetic_t(4, gen)
    _, unfixed_masks = diffusion.mask_tokens(x, t, MASK, gen)  # the same draws without the prompt
    xt = torch.where(unfixed_masks & ~fixed, MASK, x)
    assert (xt[:, :4] == x[:, :4]).all() and (xt[:, 4:] == MASK).any()
    assert math.isclose(loss.item(), slow_elbo(model, x, xt, t), rel_tol=1e-5)


def test_antithetic_t_covers_the_range_evenly():
    t = diffusion.antithetic_t(8, torch.Generator().manual_seed(3))
    assert t.min() >= diffusion.EPS and t.max() < 1
    gaps = torch.diff(torch.sort(t).values)
    torch.testing.assert_close(gaps, torch.full((7,), (1 - diffusion.EPS) / 8))


def test_mask_rate_follows_t():
    x = torch.zeros(2, 20000, dtype=torch.long)
    _, masked = diffusion.mask_tokens(x, torch.tensor([0.1, 0.8]), MASK, torch.Generator().manual_seed(0))
    rates = masked.float().mean(1)
    assert abs(rates[0] - 0.1) < 0.01 and abs(rates[1] - 0.8) < 0.01


def slow_validation(model, batches, n_t, seed, fixed, scored):
    """validation_losses written out: for each batch, for each t of the grid in order, masks from one generator
    seeded by `seed`, the whole-vocabulary ELBO per token; the answer loss over scored positions alone."""
    generator = torch.Generator().manual_seed(seed)
    total = answer = 0.0
    tokens = answer_tokens = 0
    for x, f, s in zip(batches, fixed, scored):
        for t in diffusion.stratified_t(n_t):
            xt, masked = diffusion.mask_tokens(x, t.expand(x.shape[0]), MASK, generator, f)
            logits = model.logits(model(xt)).double()
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x, reduction="none") / t.item()
            total += ce[masked].sum().item()
            answer += ce[masked & s].sum().item()
        tokens += x.numel() * n_t
        answer_tokens += int(s.sum()) * n_t
    return total / tokens, answer / answer_tokens


@pytest.mark.parametrize("tokens_per_forward", [diffusion.VALIDATION_TOKENS_PER_FORWARD, 3 * 16, 2 * 3 * 16])
def test_validation_matches_the_elbo_written_out(tokens_per_forward, monkeypatch):
    """Scored a few mask ratios per forward (all 5; one; two, two and one) and summed on the device, the
    validation ELBO is the written-out one: the same masks in the same order, prompts never masked, the answer
    loss over scored tokens only."""
    monkeypatch.setattr(diffusion, "VALIDATION_TOKENS_PER_FORWARD", tokens_per_forward)
    torch.manual_seed(0)
    model = LoopMDM(CFG).eval()
    batches = [torch.randint(0, MASK, (3, 16), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    fixed = [torch.zeros(3, 16, dtype=torch.bool) for _ in batches]
    for f in fixed:
        f[:, :4] = True  # a 4-token prompt
    scored = [torch.zeros(3, 16, dtype=torch.bool) for _ in batches]
    for s in scored:
        s[:, 4:7] = True  # a 3-token answer
    loss, answer = diffusion.validation_losses(model, batches, MASK, n_t=5, seed=3, fixed=fixed, scored=scored)
    want_loss, want_answer = slow_validation(model, batches, 5, 3, fixed, scored)
    assert loss == pytest.approx(want_loss, rel=1e-5) and answer == pytest.approx(want_answer, rel=1e-5)
    assert answer != pytest.approx(loss, rel=1e-2)  # the answer loss is its own number


def test_validation_is_deterministic_and_uses_the_grid():
    torch.manual_seed(0)
    model = LoopMDM(CFG).eval()
    batches = [torch.randint(0, MASK, (3, 16), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    first = diffusion.validation_elbo(model, batches, MASK, n_t=4, seed=5)
    torch.rand(100)  # global RNG state must not matter
    assert diffusion.validation_elbo(model, batches, MASK, n_t=4, seed=5) == first
    assert diffusion.validation_elbo(model, batches, MASK, n_t=4, seed=6) != first
    # An untrained model is near uniform over 64 ids: the ELBO is close to log(64) nats/token.
    assert abs(first - math.log(64)) < 0.5
    torch.testing.assert_close(diffusion.stratified_t(4), diffusion.EPS + (1 - diffusion.EPS) *
                               torch.tensor([0.125, 0.375, 0.625, 0.875]))


@pytest.mark.parametrize("chunk_rows", [3, 1000])
def test_chunked_linear_cross_entropy_matches_autograd_reference(chunk_rows):
    """Value and gradients of the fused head + CE (chunks of 3 rows, or all rows in one chunk; zero-weight
    padding) against plain autograd over full logits, for a model with a tied and an untied head."""
    import dataclasses

    import torch.nn.functional as F
    for tied in (False, True):
        torch.manual_seed(0)
        model = LoopMDM(dataclasses.replace(CFG, tie_embeddings=tied))
        x = torch.randint(0, MASK, (3, 12), generator=torch.Generator().manual_seed(1))
        batch = diffusion.noise_batch(x, torch.tensor([0.3, 0.6, 0.9]), MASK, torch.Generator().manual_seed(2),
                                      pad_to=8)
        assert (batch.weight == 0).any()  # padding present
        h = model(batch.xt).reshape(-1, CFG.d_model).index_select(0, batch.index)
        got = diffusion.linear_cross_entropy(h, model.head.weight, batch.targets, batch.weight,
                                            max_chunk_elements=chunk_rows * 64)
        got.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        h = model(batch.xt).reshape(-1, CFG.d_model).index_select(0, batch.index)
        want = (F.cross_entropy(model.logits(h), batch.targets, reduction="none") * batch.weight).sum()
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for g, p in zip(grads, model.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
