"""The one FLOPs definition of the project: model FLOPs, the PaLM/nanoGPT convention, loops unrolled.

A forward pass costs, per token at sequence length S and width d:
    2 * (weights of every matmul it applies: each applied layer's 4 d^2 attention + 3 d d_ff SwiGLU weights,
         a looped layer counted once per application, plus the d * V output head)
  + 4 * S * d per applied layer (q.k scores and the attention-weighted sum of v, over all heads).
Training costs 3 x forward (the backward pass does two matmuls per forward matmul); with truncated backprop
through the loop (train.loop_backprop = K) the backward runs only over the last K passes of the looped block,
so a step costs forward(n_loops) + 2 x forward(min(n_loops, K)). Embedding lookups, norms,
RoPE and softmax are not counted. Implementation shortcuts (the head applied to masked positions only) do not
change these numbers, so every variant is charged the same way.
"""

from .model import ModelConfig


def params_per_layer(cfg: ModelConfig) -> int:
    return 4 * cfg.d_model * cfg.d_model + 3 * cfg.d_model * cfg.ff_dim + 2 * cfg.d_model  # + 2 norm weights


def num_params(cfg: ModelConfig) -> int:
    """Parameter count (looping adds none): embedding, layers, final norm, head unless tied."""
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    return cfg.vocab_size * cfg.d_model + cfg.n_layers * params_per_layer(cfg) + cfg.d_model + head


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, n_loops: int | None = None) -> int:
    layers = cfg.applied_layers(n_loops)
    matmul_weights = layers * (4 * cfg.d_model * cfg.d_model + 3 * cfg.d_model * cfg.ff_dim)
    matmul_weights += cfg.d_model * cfg.vocab_size
    return 2 * matmul_weights + 4 * seq_len * cfg.d_model * layers


def train_flops_per_token(cfg: ModelConfig, seq_len: int, n_loops: int | None = None, backprop_loops: int = 0) -> int:
    """Forward + backward FLOPs per token of a step that runs `n_loops` (default: the config's) and propagates
    gradients through the last `backprop_loops` passes of the loop (0: all of them)."""
    n = cfg.n_loops if n_loops is None else n_loops
    backward_loops = min(n, backprop_loops) if backprop_loops else n
    return forward_flops_per_token(cfg, seq_len, n) + 2 * forward_flops_per_token(cfg, seq_len, backward_loops)


def train_flops_per_step(cfg: ModelConfig, seq_len: int, batch_size: int, n_loops: int | None = None,
                         backprop_loops: int = 0) -> int:
    return train_flops_per_token(cfg, seq_len, n_loops, backprop_loops) * seq_len * batch_size


def steps_for_budget(budget_flops: float, flops_per_step: int) -> int:
    """Optimizer steps a training budget buys (whole steps only: the budget is never overspent)."""
    return int(budget_flops // flops_per_step)

