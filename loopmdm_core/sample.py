"""Samplers for masked diffusion models, with a loop schedule deciding each network call's loop count.

- ancestral (MDLM, Sahoo et al. 2024): going from mask ratio t to s < t, each masked token is revealed with
  probability 1 - s/t, its value drawn from the model's prediction.
- confidence (LLaDA, Nie et al. 2025): each step reveals the k masked tokens the model is most confident in,
  k chosen so that everything is revealed by the last step.
Both can run semi-autoregressively (`block_size`: blocks left to right, each with its share of the steps) and
condition on a prompt (its tokens are never masked). Categorical draws use Gumbel noise in float64 from the
sampler's own generator: a seed gives the same output. A row is not computed again when its tokens and loop
count are those of its last prediction (MDLM's cache: the denoiser has no time input) or when it has nothing left
to reveal; an adaptive schedule gives each row its own loop count. Every sample reports the forward FLOPs it
spent, counted by flops.py.
"""

from dataclasses import dataclass, field

import torch

from . import flops
from .schedules import Converge, Fixed


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (batch, length), no mask token left
    flops: int  # forward FLOPs of all network calls (flops.forward_flops_per_token x tokens of each row computed)
    loops: list[tuple[int, ...]] = field(default_factory=list)  # per network call: the loops of each row it computed

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
    """Calls the model under a loop schedule and counts the FLOPs, row by row: a row is computed only when it has
    something to reveal and its tokens or its loop count changed since its last prediction (MDLM's cache: the
    denoiser has no time input), and an adaptive schedule gives each row its own loop count. So a row's
    prediction, loops and FLOPs are those it gets when sampled alone, whatever else is in the batch."""

    def __init__(self, model, n_tokens: int, schedule, n_steps: int, shape: tuple[int, int], device):
        self.model, self.n_tokens, self.schedule, self.n_steps = model, n_tokens, schedule, n_steps
        batch, length = shape
        self.result_loops: list[tuple[int, ...]] = []
        self.flops = 0
        self.confidence = torch.full((batch,), float("nan"), dtype=torch.float64)  # per row; NaN: none yet
        self.logp = torch.zeros(batch, length, n_tokens, device=device)  # each row's last prediction
        self.tokens = torch.zeros(shape, dtype=torch.long, device=device)  # ... the tokens it was made from
        self.loops = torch.zeros(batch, dtype=torch.long)  # ... and its loop count (0: no prediction yet)

    def __call__(self, xt: torch.Tensor, step: int, need: torch.Tensor) -> torch.Tensor:
        """Log-probabilities over the tokenizer's ids (mask and padding excluded), (batch, length, n_tokens),
        current for the rows in `need` (bool per row, on the CPU)."""
        plan = self.schedule(step, self.n_steps, self.confidence)
        converge = isinstance(plan, Converge)
        batch, length = xt.shape
        cached = (self.loops > 0) & (self.tokens == xt).all(1).cpu()
        if not converge:
            plan = torch.as_tensor(plan, dtype=torch.long).expand(batch)
            cached &= self.loops == plan
        rows = (need & ~cached).nonzero().squeeze(1)
        if rows.numel() == 0:
            return self.logp
        on_device = rows.to(xt.device)
        x = xt[on_device]
        if converge:
            hidden, loops = self.model.forward_until_converged(x, plan.tol, plan.min_loops, plan.max_loops)
            loops = loops.cpu()
        else:
            loops = plan[rows]
            k = int(loops[0])
            hidden = self.model(x, n_loops=k) if bool((loops == k).all()) else self.model.forward_per_row(x, loops)
        self.logp[on_device] = torch.log_softmax(self.model.logits(hidden)[..., :self.n_tokens].float(), dim=-1)
        self.tokens[on_device] = x
        self.loops[rows] = loops
        self.flops += sum(flops.forward_flops_per_token(self.model.cfg, length, k) * length for k in loops.tolist())
        self.result_loops.append(tuple(loops.tolist()))
        return self.logp


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
    denoise = _Denoiser(model, n_tokens, schedule or Fixed(model.cfg.n_loops), n_steps, x.shape, device)
    step = 0
    for b, (lo, hi) in enumerate(blocks):
        steps = max(1, n_steps // len(blocks) + (b < n_steps % len(blocks)))  # the blocks share the steps
        for i in range(steps):
            masked = x == mask_id
            masked[:, :lo] = False
            masked[:, hi:] = False
            need = masked.any(1).cpu()  # a row with nothing left to reveal in this block needs no prediction
            logp = denoise(x, step, need)
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
            # each row's mean top probability over its still-masked positions (NaN: none), for the next call's
            # schedule; kept from the row's last call where it had nothing to reveal
            still = x == mask_id
            top = logp.max(-1).values.exp().double()
            mean = ((top * still).sum(1) / still.sum(1)).cpu()
            denoise.confidence = torch.where(need, mean, denoise.confidence)
            step += 1
    model.train(was_training)
    return SampleResult(x, denoise.flops, denoise.result_loops)
