"""The masked diffusion objective (MDLM, Sahoo et al. 2024; SMDM, Nie et al. 2024).

Forward process: each token is replaced by the mask token independently with probability t, t ~ U(eps, 1).
The negative ELBO per sequence is  E_t [ (1/t) * sum over masked positions of -log p(x_i | x_t) ],
reported per token (divided by the sequence length): nats/token, an upper bound on the true NLL.
"""

import contextlib
import functools
import math
from dataclasses import dataclass

import torch

EPS = 1e-3  # smallest mask ratio: keeps the 1/t weight bounded (MDLM's sampling_eps)


def antithetic_t(batch_size: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """Low-discrepancy mask ratios: one uniform offset, then evenly spaced over [0, 1) mod 1, mapped to [EPS, 1).

    Every batch covers the whole range of t, which cuts the variance of the 1/t-weighted loss (MDLM sec. 3.5).
    """
    u = torch.rand(1, generator=generator)
    u = (u + torch.arange(batch_size) / batch_size) % 1.0
    return (EPS + (1 - EPS) * u).to(device)


def stratified_t(n_points: int) -> torch.Tensor:
    """A fixed grid of mask ratios for validation: midpoints of n equal strata of [EPS, 1]."""
    return EPS + (1 - EPS) * (torch.arange(n_points) + 0.5) / n_points


def mask_tokens(x: torch.Tensor, t: torch.Tensor, mask_id: int, generator: torch.Generator,
                fixed: torch.Tensor | None = None):
    """Mask each token of row b with probability t[b], never where `fixed` (a prompt) is set.
    Returns (noised tokens, boolean mask)."""
    draws = torch.rand(x.shape, generator=generator).to(x.device)
    masked = draws < t.to(x.device)[:, None]
    if fixed is not None:
        masked &= ~fixed.to(x.device)
    return torch.where(masked, torch.full_like(x, mask_id), x), masked


@dataclass
class NoisedBatch:
    """A batch with its masks drawn on the host, laid out for the loss: the masked positions as a flat index
    list padded to a multiple of `pad_to` (few distinct shapes), so the device never computes a data-dependent
    shape and never has to sync with the host."""
    xt: torch.Tensor  # (B, S) noised tokens: the model's input
    index: torch.Tensor  # (C,) flat positions (b * S + i) of the masked tokens, then padding (position 0)
    targets: torch.Tensor  # (C,) the clean tokens at those positions
    weight: torch.Tensor  # (C,) 1/t of each position's row; 0 on padding
    n_tokens: int  # B * S: the loss is reported per token

    def to(self, device) -> "NoisedBatch":
        if torch.device(device).type != "cuda":
            return NoisedBatch(*(v.to(device) for v in (self.xt, self.index, self.targets, self.weight)), self.n_tokens)
        # Pinned host memory: the copies overlap with the device's work on the previous step.
        return NoisedBatch(*(v.pin_memory().to(device, non_blocking=True)
                             for v in (self.xt, self.index, self.targets, self.weight)), self.n_tokens)


def noise_batch(x: torch.Tensor, t: torch.Tensor, mask_id: int, generator: torch.Generator,
                pad_to: int = 1, rows: slice = slice(None), fixed: torch.Tensor | None = None) -> NoisedBatch:
    """Draw the masks of `x` (on the host, from `generator`: the same masks on any device) at ratios `t`, never
    on `fixed` tokens, and keep `rows` of the batch: a data-parallel rank draws the whole batch's masks and keeps
    its share, so any number of ranks trains on exactly the masks one process would."""
    xt, masked = mask_tokens(x, t, mask_id, generator, fixed)
    x, t, xt, masked = x[rows], t[rows], xt[rows], masked[rows]
    flat = masked.reshape(-1).nonzero().squeeze(1)
    n = len(flat)
    size = max(pad_to, -(-n // pad_to) * pad_to)
    index = torch.zeros(size, dtype=torch.long)
    index[:n] = flat
    weight = torch.zeros(size, dtype=torch.float32)
    weight[:n] = (1.0 / t.float())[flat // x.shape[1]]
    return NoisedBatch(xt, index, x.reshape(-1)[index], weight, x.numel())


def masked_hidden(model, batch: NoisedBatch, n_loops: int | None = None, backprop_loops: int = 0) -> torch.Tensor:
    """The final hidden states at the masked positions (batch.index order), for the head to score."""
    hidden = model(batch.xt, n_loops=n_loops, backprop_loops=backprop_loops)
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.index)


def weighted_ce_sum(model, batch: NoisedBatch, n_loops: int | None = None, backprop_loops: int = 0) -> torch.Tensor:
    """Sum over the masked positions of CE / t (fp32). The head runs on the masked positions only.
    `model` may be wrapped (DistributedDataParallel): the head is read from the module inside."""
    head = getattr(model, "module", model).head.weight
    return linear_cross_entropy(masked_hidden(model, batch, n_loops, backprop_loops), head, batch.targets,
                                batch.weight)


def elbo_loss(model, x: torch.Tensor, mask_id: int, generator: torch.Generator, n_loops: int | None = None,
              pad_to: int = 1, rows: slice = slice(None), fixed: torch.Tensor | None = None,
              backprop_loops: int = 0) -> torch.Tensor:
    """Training loss of clean tokens `x` (host tensor; moved to the model's device here): sum over masked
    positions of CE/t, divided by the number of tokens in the batch (in `rows` of it, for one rank's share).
    `fixed` tokens (prompts) are never masked: the loss is then the answers' given their prompts."""
    batch = noise_batch(x, antithetic_t(x.shape[0], generator), mask_id, generator, pad_to, rows, fixed)
    batch = batch.to(next(model.parameters()).device)
    return weighted_ce_sum(model, batch, n_loops, backprop_loops) / batch.n_tokens


def _ce_chunk(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, with_grad: bool):
    """Weighted CE sum of one chunk of logits and, when asked, its gradient with respect to them, in the
    logits' dtype; softmax statistics in fp32. The CPU's version; CUDA runs cross_entropy_kernel's."""
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    total = (weight * (lse - z.gather(1, targets[:, None])).squeeze(1)).sum()
    if not with_grad:
        return total, None
    onehot = torch.arange(z.shape[1], device=z.device)[None, :] == targets[:, None]
    return total, ((torch.exp(z - lse) - onehot.float()) * weight[:, None]).to(logits.dtype)


@functools.cache
def _ce_chunk_for(device_type: str):
    if device_type == "cuda":  # one read of the logits, the gradient written over them (Triton)
        from .cross_entropy_kernel import weighted_ce_
        return weighted_ce_
    return _ce_chunk


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i weight_i * CE(h_i @ W^T, target_i), computed in row chunks: the (rows x vocab) logits exist one
    chunk at a time, in the matmul dtype, never in fp32. The gradients are formed in the same pass (the loss
    is a weighted sum, so backward only scales them by the incoming gradient)."""

    @staticmethod
    def forward(ctx, h, w, targets, weight, chunk):
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
        hc, wc = h.to(dtype), w.to(dtype)
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hc) if needs_grad else None
        grad_w = None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        ce_chunk = _ce_chunk_for(h.device.type)
        with torch.autocast(h.device.type, enabled=False):
            for lo in range(0, h.shape[0], chunk):
                rows = slice(lo, lo + chunk)
                part, g = ce_chunk(hc[rows] @ wc.t(), targets[rows], weight[rows], needs_grad)
                total += part
                if needs_grad:
                    grad_h[rows] = g @ wc
                    part_w = g.t() @ hc[rows]
                    if grad_w is None:
                        grad_w = part_w
                    else:  # several chunks: their sum is kept in fp32 (.float() is a no-op once it is)
                        grad_w = grad_w.float().add_(part_w)
        if needs_grad and grad_w is None:  # no rows at all
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, w.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return _scaled(grad_h, grad_out, ctx.dtypes[0]), _scaled(grad_w, grad_out, ctx.dtypes[1]), None, None, None


def _scaled(grad: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # grad * scale written straight in the parameter's dtype: one pass over a (vocab x d) gradient, not two
    return torch.mul(grad, scale, out=torch.empty(grad.shape, dtype=dtype, device=grad.device))


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                         max_chunk_elements: int | None = None) -> torch.Tensor:
    """Weighted sum of the cross-entropies of the head `w` applied to rows `h`: never the full logits at once.
    Chunks of at most 2^30 logits on CUDA (2 GiB in bf16: one chunk for a 32 x 1024 batch at GPT-2's vocabulary,
    so the head's weight gradient is one matmul), 2^28 elsewhere (fp32 on the CPU)."""
    if max_chunk_elements is None:
        max_chunk_elements = 1 << 30 if h.is_cuda else 1 << 28
    chunk = max(1, max_chunk_elements // w.shape[0])
    return _LinearCrossEntropy.apply(h, w, targets, weight, chunk)


# Validation scores several mask ratios of a batch in one forward, up to this many tokens: few, large forwards keep
# a small model's evaluation from being bound by kernel launches (one (32 x 256) forward per ratio was), while a
# forward's activations stay small (2^17 tokens: ~0.2 GB per (tokens x 768) bf16 tensor).
VALIDATION_TOKENS_PER_FORWARD = 1 << 17


@torch.no_grad()
def validation_losses(model, batches: list[torch.Tensor], mask_id: int, n_t: int, seed: int,
                      n_loops: int | None = None, autocast=None, fixed: list[torch.Tensor] | None = None,
                      scored: list[torch.Tensor] | None = None) -> tuple[float, float | None]:
    """Negative ELBO in nats/token on fixed batches, each sequence scored at every t of a stratified grid;
    `fixed` (one per batch, or None) marks prompt tokens, never masked. With `scored` (one boolean tensor per
    batch: a prompted task's answer tokens), also the same ELBO over those tokens alone, per scored token
    (val/answer_loss: the prompt and the EOS padding are masked and predicted as usual, but not counted);
    else None.

    The masks come from a generator seeded by `seed` alone, so two evaluations of the same weights see the
    same work and give the same number, and every trial of a sweep is scored on identical inputs, however many
    ratios share a forward. The sums stay on the device until the end: one host sync per evaluation, not one per
    forward.
    """
    generator = torch.Generator().manual_seed(seed)
    grid = stratified_t(n_t)
    device = next(model.parameters()).device
    head = model.head.weight
    sums, answer_sums, tokens, answer_tokens = [], [], 0, 0
    for i, x in enumerate(batches):
        x = x.cpu()  # masks are drawn on the host (no-op for the host batches the callers keep)
        per_forward = max(1, VALIDATION_TOKENS_PER_FORWARD // x.numel())
        answers = None if scored is None else scored[i].reshape(-1).to(device)
        for lo in range(0, len(grid), per_forward):
            # the batch once per ratio, stacked: the host generator fills the stacked draws in the order separate
            # draws per ratio would take, so the masks do not depend on how many ratios share a forward
            ratios = grid[lo:lo + per_forward]
            rows = x.repeat(len(ratios), 1)
            prompt = None if fixed is None else fixed[i].repeat(len(ratios), 1)
            batch = noise_batch(rows, ratios.repeat_interleave(x.shape[0]), mask_id, generator,
                                fixed=prompt).to(device)
            with autocast() if autocast else contextlib.nullcontext():
                h = masked_hidden(model, batch, n_loops)
                sums.append(linear_cross_entropy(h, head, batch.targets, batch.weight))
                if answers is not None:  # a stacked position's token is position % (row length x rows) of x
                    keep = answers[batch.index % x.numel()]
                    answer_sums.append(linear_cross_entropy(h, head, batch.targets, batch.weight * keep))
        tokens += x.numel() * len(grid)
        if scored is not None:
            answer_tokens += int(scored[i].sum()) * len(grid)
    total = torch.stack(sums).cpu().double().sum().item()  # the one sync; fp64 on the host (MPS has none)
    answer = None
    if scored is not None and answer_tokens:
        answer = torch.stack(answer_sums).cpu().double().sum().item() / answer_tokens
    return total / tokens, answer


def validation_elbo(model, batches: list[torch.Tensor], mask_id: int, n_t: int, seed: int,
                    n_loops: int | None = None, autocast=None, fixed: list[torch.Tensor] | None = None) -> float:
    """validation_losses' negative ELBO over all tokens (nats/token)."""
    return validation_losses(model, batches, mask_id, n_t, seed, n_loops, autocast, fixed)[0]


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp overflows a float past ~709 nats
