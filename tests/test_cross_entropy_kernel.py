"""The Triton cross-entropy kernel (CUDA only) against a float64 reference. Skipped where there is no CUDA
device; run on a GPU machine (the project's device runs do: see benchmarks/throughput.py)."""

import pytest
import torch
import torch.nn.functional as F

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs a CUDA device")


def reference(z, targets, weight):
    z = z.double()
    loss = (weight.double() * (torch.logsumexp(z, -1) - z.gather(1, targets[:, None]).squeeze(1))).sum()
    grad = (torch.softmax(z, -1) - F.one_hot(targets, z.shape[1]).double()) * weight.double()[:, None]
    return loss, grad


@cuda
@pytest.mark.parametrize("rows, vocab, block", [(1000, 50304, 8192), (37, 1000, 8192), (5, 5000, 1024),
                                                (300, 257, 128), (2, 70000, 4096)])
def test_weighted_ce_matches_float64(rows, vocab, block):
    from loopmdm_core.cross_entropy_kernel import weighted_ce_
    g = torch.Generator(device="cuda").manual_seed(rows)
    z = (4 * torch.randn(rows, vocab, device="cuda", generator=g)).bfloat16()
    targets = torch.randint(0, vocab, (rows,), device="cuda", generator=g)
    weight = 10 * torch.rand(rows, device="cuda", generator=g)
    weight[-1] = 0  # padding rows: no loss, no gradient
    want_loss, want_grad = reference(z, targets, weight)

    loss, none = weighted_ce_(z.clone(), targets, weight, with_grad=False, block=block)
    assert none is None
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=0)

    logits = z.clone()
    loss, grad = weighted_ce_(logits, targets, weight, with_grad=True, block=block)
    assert grad.data_ptr() == logits.data_ptr() and grad.dtype == torch.bfloat16  # written in place
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=0)
    assert torch.isfinite(grad).all()
    error = (grad.double() - want_grad).norm() / want_grad.norm()
    assert error < 4e-3, error  # bf16 output: one rounding per element
    assert (grad[-1] == 0).all()


@cuda
def test_linear_cross_entropy_on_cuda_matches_cpu():
    """The CUDA path (Triton kernel, one chunk, bf16 under autocast) against the CPU's fp32 path."""
    from loopmdm_core import diffusion
    torch.manual_seed(0)
    h, w = torch.randn(500, 64, requires_grad=True), (0.2 * torch.randn(3000, 64)).requires_grad_()
    targets, weight = torch.randint(0, 3000, (500,)), torch.rand(500)
    loss = diffusion.linear_cross_entropy(h, w, targets, weight)
    loss.backward()
    hc, wc = h.detach().cuda().requires_grad_(), w.detach().cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss_cuda = diffusion.linear_cross_entropy(hc, wc, targets.cuda(), weight.cuda())
    loss_cuda.backward()
    torch.testing.assert_close(loss_cuda.cpu(), loss, rtol=1e-2, atol=0)
    for got, want in ((hc.grad, h.grad), (wc.grad, w.grad)):
        assert got.dtype == torch.float32
        assert (got.cpu() - want).norm() / want.norm() < 2e-2
