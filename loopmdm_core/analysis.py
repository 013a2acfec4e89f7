"""Attention among masked positions: how much of its attention a masked query puts on masked keys, per applied
layer (so per loop iteration of the looped block). The hypothesis to test: looping raises it.

The probabilities are recomputed explicitly (softmax(q k^T / sqrt(d)) from the layer's own projections and
RoPE) while the hidden states advance through the model's real blocks, so they are the attention the model
applies, not a re-implementation of it.
"""

import torch

from .model import apply_rope


@torch.no_grad()
def attention_probs(model, idx: torch.Tensor, n_loops: int | None = None):
    """Yield (layer index, loop iteration or None, probabilities (batch, heads, seq, seq)) per applied layer."""
    cfg = model.cfg
    cos, sin = model.rope(idx.shape[1], idx.device)
    x = model.embed(idx)
    for loop_pass, i, layer in model.applied_layers(n_loops):
        b, s, _ = x.shape
        q, k, _ = layer.attn.wqkv(layer.attn_norm(x)).view(b, s, 3, cfg.n_heads, cfg.head_dim).unbind(2)
        q, k = apply_rope(q, cos, sin).transpose(1, 2), apply_rope(k, cos, sin).transpose(1, 2)
        probs = torch.softmax((q.float() @ k.float().transpose(-1, -2)) / cfg.head_dim ** 0.5, dim=-1)
        yield i, loop_pass, probs
        x = layer(x, cos, sin)


@torch.no_grad()
def masked_attention_share(model, x: torch.Tensor, t: float, mask_id: int, seed: int = 0,
                           n_loops: int | None = None) -> list[dict]:
    """Mask `x` at ratio t (fixed seed), then for each applied layer the mean share of attention that masked
    queries give to masked keys (and, for reference, the share of keys that are masked)."""
    from .diffusion import mask_tokens
    generator = torch.Generator().manual_seed(seed)
    xt, masked = mask_tokens(x, torch.full((x.shape[0],), t), mask_id, generator)
    rows = []
    for i, iteration, probs in attention_probs(model, xt, n_loops):
        to_masked = (probs * masked[:, None, None, :].float()).sum(-1)  # (batch, heads, query)
        query_is_masked = masked[:, None, :].expand_as(to_masked)
        rows.append({"layer": i, "loop_iteration": iteration,
                     "mask_to_mask_share": float(to_masked[query_is_masked].mean()) if masked.any() else float("nan"),
                     "masked_key_fraction": float(masked.float().mean())})
    return rows
