"""Attention kernels: torch's scaled_dot_product_attention (cuDNN's kernel first on CUDA), or flash-attn.

All take q, k, v laid out as (batch, seq, heads, head_dim) and attend bidirectionally (no mask). On an H100,
SDPA's cuDNN backend ran this model's attention 1.55x faster than its flash backend
(docs/performance.md#attention-kernels), so on CUDA `auto` picks it; flash-attn (FA2) is used only when asked for.
"""

import logging

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cudnn", "flash", "sdpa")
# cuDNN first; the others where it cannot run (fp32 inputs, old cards): same maths, another kernel.
CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def resolve_backend(requested: str, device: torch.device) -> str:
    """Pick the kernel for `requested` in BACKENDS on `device`; 'flash' where it cannot run is an error."""
    from .errors import ConfigError
    if requested == "auto":
        backend = "cudnn" if device.type == "cuda" else "sdpa"
    elif requested == "flash" and not (device.type == "cuda" and _flash_attn_func() is not None):
        raise ConfigError("model.attention: 'flash' needs CUDA and the flash-attn package "
                          "(pip install 'loopmdm[cuda]'); use 'auto' or 'sdpa'")
    elif requested == "cudnn" and device.type != "cuda":
        raise ConfigError("model.attention: 'cudnn' needs CUDA; use 'auto' or 'sdpa'")
    else:
        backend = requested
    log.info("attention backend: %s (requested %s, device %s)", backend, requested, device.type)
    return backend


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "flash" and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_attn_func()(q, k, v, causal=False)
    # SDPA wants (batch, heads, seq, head_dim). flash-attn also lands here for fp32 inputs it cannot take.
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if backend == "cudnn":
        with sdpa_kernel(CUDNN_FIRST, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
