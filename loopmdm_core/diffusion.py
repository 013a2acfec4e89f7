"""The masked diffusion objective (MDLM, Sahoo et al. 2024; SMDM, Nie et al. 2024).

Forward process: each token is replaced by the mask token independently with probability t, t ~ U(eps, 1).
The negative ELBO per sequence is  E_t [ (1/t) * sum over masked positions of -log p(x_i | x_t) ],
reported per token (divided by the sequence length): nats/token, an upper bound on the true NLL.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

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


def mask_tokens(x: torch.Tensor, t: torch.Tensor, mask_id: int, generator: torch.Generator):
    """Mask each token of row b with probability t[b]. Returns (noised tokens, boolean mask)."""
    draws = torch.rand(x.shape, generator=generator).to(x.device)
    masked = draws < t.to(x.device)[:, None]
    return torch.where(masked, torch.full_like(x, mask_id), x), masked


def masked_ce_over_t(model, x: torch.Tensor, xt: torch.Tensor, masked: torch.Tensor, t: torch.Tensor,
                     n_loops: int | None = None) -> torch.Tensor:
    """Per-row sum over masked positions of CE / t, in fp32. The head runs on masked positions only."""
    hidden = model(xt, n_loops=n_loops)
    logits = model.logits(hidden[masked]).float()
    ce = F.cross_entropy(logits, x[masked], reduction="none")
    rows = masked.nonzero(as_tuple=True)[0]
    per_row = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32).index_add_(0, rows, ce)
    return per_row / t.to(x.device)


def elbo_loss(model, x: torch.Tensor, mask_id: int, generator: torch.Generator,
              n_loops: int | None = None) -> torch.Tensor:
    """Training loss: sum over masked positions of CE/t, divided by the number of tokens in the batch."""
    t = antithetic_t(x.shape[0], generator)
    xt, masked = mask_tokens(x, t, mask_id, generator)
    return masked_ce_over_t(model, x, xt, masked, t, n_loops).sum() / x.numel()


@torch.no_grad()
def validation_elbo(model, batches: list[torch.Tensor], mask_id: int, n_t: int, seed: int,
                    n_loops: int | None = None, autocast=None) -> float:
    """Negative ELBO in nats/token on fixed batches, each sequence scored at every t of a stratified grid.

    The masks come from a generator seeded by `seed` alone, so two evaluations of the same weights see the
    same work and give the same number, and every trial of a sweep is scored on identical inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    grid = stratified_t(n_t)
    total, tokens = 0.0, 0
    for x in batches:
        for t_value in grid:
            t = t_value.expand(x.shape[0])
            xt, masked = mask_tokens(x, t, mask_id, generator)
            with autocast() if autocast else contextlib.nullcontext():
                total += masked_ce_over_t(model, x, xt, masked, t, n_loops).sum().item()
            tokens += x.numel()
    return total / tokens


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp overflows a float past ~709 nats
