"""Samplers for masked diffusion models, with a loop schedule deciding each network call's loop count.

- ancestral (MDLM, Sahoo et al. 2024): going from mask ratio t to s < t, each masked token is revealed with
  probability 1 - s/t, its value drawn from the model's prediction.
- confidence (LLaDA, Nie et al. 2025): each step reveals the k masked tokens the model is most confident in,
  k chosen so that everything is revealed by the last step.
Both can run semi-autoregressively (`block_size`: blocks left to right, each with its share of the steps) and
condition on a prompt (its tokens are never masked). Categorical draws use Gumbel noise in float64 from the
sampler's own generator: a seed gives the same output. A network call is skipped when no token changed since
the previous one and the loop count is the same (MDLM's cache: the denoiser has no time input). Every sample
reports the forward FLOPs it spent, counted by flops.py.
"""

from dataclasses import dataclass, field

import torch

from . import flops
from .schedules import Converge, Fixed


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (batch, length), no mask token left
    flops: int  # forward FLOPs of all network calls (flops.forward_flops_per_token x tokens per call)
    loops: list[int] = field(default_factory=list)  # loop count of each network call, in order

    @property
    def calls(self) -> int:
        return len(self.loops)


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """A categorical draw per row: argmax(logits / T + Gumbel), the noise in float64 (fp32/bf16 Gumbel noise
    under-samples low-probability tokens, which shows up as lower-entropy text). T = 0 is greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return (logits.double() / temperature + gumbel).argmax(-1)


class _Denoiser:
    """Calls the model under a loop schedule, caches the last prediction, and counts FLOPs."""

    def __init__(self, model, n_tokens: int, schedule, n_steps: int):
        self.model, self.n_tokens, self.schedule, self.n_steps = model, n_tokens, schedule, n_steps
        self.result_loops: list[int] = []
        self.flops = 0
        self.confidence = None
        self._cache = None  # (tokens, loops, log-probs)

    def __call__(self, xt: torch.Tensor, step: int) -> torch.Tensor:
        """Log-probabilities over the tokenizer's ids (mask and padding excluded), (batch, length, n_tokens)."""
        plan = self.schedule(step, self.n_steps, self.confidence)
        if self._cache is not None and torch.equal(self._cache[0], xt) and \
                (isinstance(plan, Converge) or plan == self._cache[1]):
            return self._cache[2]
        if isinstance(plan, Converge):
            hidden, loops = self.model.forward_until_converged(xt, plan.tol, plan.min_loops, plan.max_loops)
        else:
            hidden, loops = self.model(xt, n_loops=plan), plan
        logp = torch.log_softmax(self.model.logits(hidden)[..., :self.n_tokens].float(), dim=-1)
        batch, length = xt.shape
        self.flops += flops.forward_flops_per_token(self.model.cfg, length, loops) * batch * length
        self.result_loops.append(loops)
        self._cache = (xt.clone(), loops, logp)
        return logp


def _block_ranges(start: int, length: int, block_size: int | None) -> list[tuple[int, int]]:
    block = block_size or (length - start)
    return [(b, min(b + block, length)) for b in range(start, length, block)]


@torch.no_grad()
def sample(model, *, batch_size: int, length: int, mask_id: int, n_tokens: int, n_steps: int,
           method: str = "ancestral", prompt: torch.Tensor | None = None, block_size: int | None = None,
           temperature: float = 1.0, schedule=None, seed: int = 0) -> SampleResult:
    """Generate `batch_size` sequences of `length` tokens (prompt included) in `n_steps` denoising steps.

    `n_tokens`: ids the tokenizer can emit (the model's mask and padding rows are never sampled). `schedule`:
    a loop schedule (schedules.py); default: the model's trained loop count at every call.
    """
    if method not in ("ancestral", "confidence"):
        raise ValueError(f"method must be 'ancestral' or 'confidence', got {method!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.full((batch_size, length), mask_id, dtype=torch.long, device=device)
    start = 0
    if prompt is not None:
        prompt = prompt.to(device).expand(batch_size, -1) if prompt.dim() == 1 else prompt.to(device)
        start = prompt.shape[1]
        x[:, :start] = prompt
    blocks = _block_ranges(start, length, block_size)
    denoise = _Denoiser(model, n_tokens, schedule or Fixed(model.cfg.n_loops), n_steps)
    step = 0
    for b, (lo, hi) in enumerate(blocks):
        steps = max(1, n_steps // len(blocks) + (b < n_steps % len(blocks)))  # the blocks share the steps
        for i in range(steps):
            logp = denoise(x, step)
            masked = x == mask_id
            masked[:, :lo] = False
            masked[:, hi:] = False
            draw = gumbel_argmax(logp, temperature, generator)
            if method == "ancestral":
                t, s = 1 - i / steps, 1 - (i + 1) / steps
                reveal = masked & (torch.rand(masked.shape, generator=generator).to(device) < 1 - s / t)
            else:
                chosen_p = logp.gather(-1, draw.unsqueeze(-1)).squeeze(-1).exp()
                remaining = masked.sum(1)
                k = torch.ceil(remaining / (steps - i)).long()  # reveal everything by the block's last step
                score = torch.where(masked, chosen_p.double(), torch.full_like(chosen_p, -1.0, dtype=torch.float64))
                order = score.argsort(dim=1, descending=True)
                rank = torch.empty_like(order).scatter_(1, order, torch.arange(length, device=device).expand_as(order))
                reveal = masked & (rank < k[:, None])
            x = torch.where(reveal, draw, x)
            still = x == mask_id
            denoise.confidence = float(logp.max(-1).values.exp()[still].mean()) if still.any() else None
            step += 1
    model.train(was_training)
    return SampleResult(x, denoise.flops, denoise.result_loops)
