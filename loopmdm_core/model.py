"""LoopMDM: a bidirectional Llama-style transformer whose layers [loop_start, loop_end) run n_loops times.

Layers [0, loop_start) run once, the looped block [loop_start, loop_end) runs n_loops times (depth without
parameters), layers [loop_end, n_layers) run once. With n_loops = 1 it is exactly a plain masked diffusion
model (MDM). No causal mask and no time conditioning: like MDLM/SMDM, the mask tokens tell the model t.
"""

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from .attention import BACKENDS, attend


def default_d_ff(d_model: int) -> int:
    # SwiGLU with 2/3 of the 4*d a GELU MLP would have, rounded up to a multiple of 64 (Llama): 768 -> 2048.
    return 64 * ((8 * d_model // 3 + 63) // 64)


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 0  # 0: default_d_ff(d_model)
    loop_start: int = 1
    loop_end: int = 3
    n_loops: int = 2
    vocab_size: int = 0  # 0: derived from the tokenizer (its size + the mask token, padded to 64)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    attention: str = "auto"  # one of attention.BACKENDS

    @property
    def ff_dim(self) -> int:
        return self.d_ff or default_d_ff(self.d_model)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def applied_layers(self, n_loops: int | None = None) -> int:
        """Layer applications per forward pass, the loop unrolled."""
        n = self.n_loops if n_loops is None else n_loops
        return self.n_layers + (self.loop_end - self.loop_start) * (n - 1)

    def problems(self) -> list[str]:
        """Everything wrong with this config, as 'model.<field>: what and how to fix' lines."""
        p = []
        for name in ("n_layers", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                p.append(f"model.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_heads >= 1 and self.d_model % self.n_heads:
            p.append(f"model.d_model: {self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                     f"pick d_model a multiple of n_heads")
        elif self.n_heads >= 1 and self.head_dim % 2:
            p.append(f"model.d_model: head dim d_model/n_heads = {self.head_dim} must be even for RoPE")
        if self.d_ff < 0:
            p.append(f"model.d_ff: must be >= 0 (0 picks the SwiGLU default), got {self.d_ff}")
        if not 0 <= self.loop_start < self.loop_end <= self.n_layers:
            p.append(f"model.loop_start/loop_end: the looped block [{self.loop_start}, {self.loop_end}) must be "
                     f"a non-empty range inside [0, n_layers={self.n_layers}], i.e. "
                     f"0 <= loop_start < loop_end <= {self.n_layers}")
        if self.n_loops < 1:
            p.append(f"model.n_loops: must be >= 1 (1 = plain MDM), got {self.n_loops}")
        if self.vocab_size < 0:
            p.append(f"model.vocab_size: must be >= 0 (0 derives it from the tokenizer), got {self.vocab_size}")
        if self.attention not in BACKENDS:
            p.append(f"model.attention: {self.attention!r} is not one of {', '.join(BACKENDS)}")
        return p


BASELINES = ("same_size", "depth_matched")  # the baselines a looped config is compared with (functions below)


def plain(cfg: ModelConfig, n_layers: int) -> ModelConfig:
    # A non-looped model is written with the canonical loop [0, n_layers) x 1, so configs that describe the
    # same network compare equal (a sweep then trains a baseline shared by several loop configs once).
    return dataclasses.replace(cfg, n_layers=n_layers, loop_start=0, loop_end=n_layers, n_loops=1)


def same_size(cfg: ModelConfig) -> ModelConfig:
    """The same-size baseline: the same layers and parameters, run once (n_loops = 1)."""
    return plain(cfg, cfg.n_layers)


def depth_matched(cfg: ModelConfig, mean_loops: float | None = None) -> ModelConfig:
    """The depth-matched baseline: as many plain layers as the unrolled loop applies (same FLOPs per token).
    With a sampled loop count (train.loop_sampling), its mean `mean_loops` sets the depth, rounded to the
    nearest whole layer, halves up: a loop [1,3) at a mean of 2.25 loops applies 6.5 layers -> 7."""
    if mean_loops is None:
        return plain(cfg, cfg.applied_layers())
    return plain(cfg, math.floor(cfg.n_layers + (cfg.loop_end - cfg.loop_start) * (mean_loops - 1) + 0.5))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # The gain in the input's dtype: a bf16 stream with an fp32 gain would take rms_norm's unfused path.
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


def rope_tables(seq_len: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, seq, 1, head_dim/2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Rotate pairs (first half, second half) of each head, the GPT-NeoX/Llama layout.
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: str):
        super().__init__()
        self.n_heads, self.head_dim, self.backend = cfg.n_heads, cfg.head_dim, backend
        self.wqkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q, k, v = self.wqkv(x).view(b, s, 3, self.n_heads, self.head_dim).unbind(2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return self.wo(attend(q, k, v, self.backend).reshape(b, s, -1))


class SwiGLU(nn.Module):
    """silu(x W_gate) * (x W_up), then W_down. W_gate and W_up are one matmul whose outputs alternate in blocks of
    64 features (gate 0-63, up 0-63, gate 64-127, ...): the backward then writes each block's two gradients
    side by side. With the two halves apart ([gate | up]) torch.compile's backward kernel read its inputs
    twice: 3.3-3.5 ms against 2.8-2.9 ms per step, profiled on an H100 at benchmarks/throughput.py's shape.
    The name says the layout, so a checkpoint of the [gate | up] layout fails to load instead of loading wrong."""

    BLOCK = 64

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.block = self.BLOCK if cfg.ff_dim % self.BLOCK == 0 else cfg.ff_dim
        self.w_gate_up_blocked = nn.Linear(cfg.d_model, 2 * cfg.ff_dim, bias=False)
        self.w_down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=False)

    def forward(self, x):
        blocks = self.w_gate_up_blocked(x).unflatten(-1, (-1, 2, self.block))  # (..., ff/block, gate|up, block)
        return self.w_down((F.silu(blocks[..., 0, :]) * blocks[..., 1, :]).flatten(-2))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, attention_backend: str):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, attention_backend)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class LoopMDM(nn.Module):
    """`attention_backend`: the kernel every layer attends with, one that attention.resolve_backend picked for
    the device. `checkpoint_loops` (train.checkpoint_loops): with gradients on, each pass through the looped
    block keeps only its input and recomputes the rest in backward, so the looped block's activation memory
    stops growing with the loop count, for about one extra forward of it."""

    def __init__(self, cfg: ModelConfig, attention_backend: str = "sdpa", checkpoint_loops: bool = False):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be resolved before building the model")
        self.cfg = cfg
        self.checkpoint_loops = checkpoint_loops
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, attention_backend) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self._rope: dict = {}
        self.reset_parameters()

    def reset_parameters(self):
        # GPT-2/nanoGPT init; residual outputs scaled by the unrolled depth so looping does not blow up the stream.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        scale = 0.02 / (2 * self.cfg.applied_layers()) ** 0.5
        for layer in self.layers:
            nn.init.normal_(layer.attn.wo.weight, std=scale)
            nn.init.normal_(layer.mlp.w_down.weight, std=scale)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def rope(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The RoPE tables (cos, sin) every layer rotates with at this sequence length (cached)."""
        key = (seq_len, str(device))
        if key not in self._rope:
            self._rope[key] = rope_tables(seq_len, self.cfg.head_dim, self.cfg.rope_theta, device)
        return self._rope[key]

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        # Under autocast the residual stream is kept in the autocast dtype (bf16), as bf16 training does in
        # torchtitan (FSDP's bf16 parameters) and nanochat (bf16 embeddings): every norm, residual add and their
        # gradients then move half the bytes of an fp32 stream (2.3% more tokens/s on an H100 at the benchmark
        # shape; the loss effect was within seed noise, see README's Performance). Weights, optimizer state, the
        # softmax statistics and the loss stay fp32. Without autocast (the CPU default) the stream stays fp32.
        x = self.embed(idx)
        if torch.is_autocast_enabled(idx.device.type):
            x = x.to(torch.get_autocast_dtype(idx.device.type))
        return x

    def applied_layers(self, n_loops: int | None = None) -> Iterator[tuple[int | None, int, Block]]:
        """The layers one forward pass with `n_loops` loops applies, in order: (pass through the looped block,
        1-based, or None outside it; layer index; the layer). Every walk through the model is this one."""
        cfg, n = self.cfg, self.cfg.n_loops if n_loops is None else n_loops
        if n < 1:
            raise ValueError(f"n_loops must be >= 1, got {n}")
        for i in range(cfg.loop_start):
            yield None, i, self.layers[i]
        for loop_pass in range(1, n + 1):
            for i in range(cfg.loop_start, cfg.loop_end):
                yield loop_pass, i, self.layers[i]
        for i in range(cfg.loop_end, cfg.n_layers):
            yield None, i, self.layers[i]

    def forward(self, idx: torch.Tensor, n_loops: int | None = None, backprop_loops: int = 0) -> torch.Tensor:
        """Final normed hidden states (batch, seq, d_model). `n_loops` overrides the config for this call.

        With gradients on and 0 < `backprop_loops` < n_loops (train.loop_backprop), the first passes through
        the looped block run without autograd and only the last `backprop_loops` are backpropagated (Huginn's
        truncated backprop). Their residual update enters as a constant, so the layers before the loop still
        get the gradient of the identity path of the residual stream (Huginn re-injects the prelude's output
        at every pass for the same purpose; this model has no injection)."""
        n = self.cfg.n_loops if n_loops is None else n_loops
        grad = torch.is_grad_enabled()
        frozen = n - backprop_loops if grad and 0 < backprop_loops < n else 0  # passes run without autograd
        checkpointed = self.checkpoint_loops and grad and n > 1

        def stage(layer):  # runs of layers applied alike: the frozen passes together, each other pass alone
            loop_pass = layer[0]
            return "frozen" if loop_pass is not None and loop_pass <= frozen else loop_pass

        cos, sin = self.rope(idx.shape[1], idx.device)
        x = self._embed(idx)
        for kind, layers in itertools.groupby(self.applied_layers(n), key=stage):
            blocks = [block for _, _, block in layers]
            if kind == "frozen":
                with torch.no_grad():
                    update = _apply(blocks, x, cos, sin) - x
                x = x + update
            elif kind is not None and checkpointed:
                x = torch.utils.checkpoint.checkpoint(_apply, blocks, x, cos, sin, use_reentrant=False)
            else:
                x = _apply(blocks, x, cos, sin)
        return self.norm(x)

    @torch.no_grad()
    def forward_per_row(self, idx: torch.Tensor, loops: torch.Tensor) -> torch.Tensor:
        """Final normed hidden states where row i runs the looped block loops[i] times (inference only): each
        pass computes only the rows still looping, so a row gets what a call on it alone gives, at its cost."""
        cos, sin = self.rope(idx.shape[1], idx.device)
        x = self._embed(idx)
        loops = loops.to(idx.device)
        for loop_pass, layers in itertools.groupby(self.applied_layers(int(loops.max())), key=lambda layer: layer[0]):
            blocks = [block for _, _, block in layers]
            if loop_pass is None:
                x = _apply(blocks, x, cos, sin)
            else:
                rows = (loops >= loop_pass).nonzero().squeeze(1)
                x = x.index_copy(0, rows, _apply(blocks, x[rows], cos, sin))
        return self.norm(x)

    @torch.no_grad()
    def forward_until_converged(self, idx: torch.Tensor, tol: float, min_loops: int, max_loops: int):
        """Run the looped block on each row until its output changes by less than `tol` (relative L2 norm of the
        row) from one pass to the next, at least `min_loops` and at most `max_loops` times (inference only). A
        row that has settled is not computed again. Returns (hidden states, loops each row ran: a long tensor)."""
        if not 1 <= min_loops <= max_loops:
            raise ValueError(f"need 1 <= min_loops <= max_loops, got {min_loops}, {max_loops}")
        cos, sin = self.rope(idx.shape[1], idx.device)
        x = self._embed(idx)
        loops = torch.zeros(idx.shape[0], dtype=torch.long, device=idx.device)
        looping = torch.ones(idx.shape[0], dtype=torch.bool, device=idx.device)
        for loop_pass, layers in itertools.groupby(self.applied_layers(max_loops), key=lambda layer: layer[0]):
            blocks = [block for _, _, block in layers]
            if loop_pass is None:
                x = _apply(blocks, x, cos, sin)
                continue
            rows = looping.nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            before = x[rows]
            after = _apply(blocks, before, cos, sin)
            x = x.index_copy(0, rows, after)
            loops[rows] = loop_pass
            if loop_pass >= min_loops:
                change = (after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1).clamp_min(1e-12)
                looping[rows] = change >= tol
        return self.norm(x), loops

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # Kept apart from forward so the loss can apply the head to masked positions only.
        return self.head(hidden)


def _apply(blocks: list[Block], x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x, cos, sin)
    return x
