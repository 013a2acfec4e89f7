"""Attention kernels: flash-attn when it imports on CUDA, else torch's scaled_dot_product_attention.

Both take q, k, v laid out as (batch, seq, heads, head_dim) and attend bidirectionally (no mask).
"""

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("auto", "flash", "sdpa")


def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def resolve_backend(requested: str, device: torch.device) -> str:
    """Pick the kernel for `requested` in BACKENDS on `device`; 'flash' where it cannot run is an error."""
    flash_ok = device.type == "cuda" and _flash_attn_func() is not None
    if requested == "auto":
        backend = "flash" if flash_ok else "sdpa"
    elif requested == "flash" and not flash_ok:
        from .errors import ConfigError
        raise ConfigError("model.attention: 'flash' needs CUDA and the flash-attn package "
                          "(pip install 'loopmdm[cuda]'); use 'auto' or 'sdpa'")
    else:
        backend = requested
    log.info("attention backend: %s (requested %s, device %s)", backend, requested, device.type)
    return backend


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "flash" and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_attn_func()(q, k, v, causal=False)
    # SDPA wants (batch, heads, seq, head_dim). flash-attn also lands here for fp32 inputs it cannot take.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
