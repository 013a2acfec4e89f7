"""Validation cost: diffusion.validation_losses against the loop it replaced, in one run.

python benchmarks/eval_cost.py [--out eval_cost.json]

The shape is the language-modelling campaign's (sweeps/lm_iso_flops_gpu.yaml): 8 layers x 256, 4 heads, vocab
4096, seq 256, blocks compiled as a trial compiles them; its evaluation is 8 batches x 32 sequences, each at 8 mask
ratios. The baseline, written out here, is how validation ran before: one forward of 32 sequences per mask ratio
and a host sync (`.item()`) after each. validation_losses scores the ratios of a batch together (up to
VALIDATION_TOKENS_PER_FORWARD tokens a forward) and syncs once. Both are timed at n_loops 1..4 (what a sweep's
inference probe asks) after a warm-up of each; the losses they return are printed side by side.
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without an install

from loopmdm_core import diffusion  # noqa: E402
from loopmdm_core.device import autocast_for  # noqa: E402
from loopmdm_core.model import LoopMDM, ModelConfig  # noqa: E402


@torch.no_grad()
def one_forward_per_ratio(model, batches, mask_id, n_t, seed, n_loops, autocast):
    """The validation loop as it was: a forward and a host sync per (batch, mask ratio)."""
    generator = torch.Generator().manual_seed(seed)
    device, head = next(model.parameters()).device, model.head.weight
    total, tokens = 0.0, 0
    for x in batches:
        for t_value in diffusion.stratified_t(n_t):
            batch = diffusion.noise_batch(x, t_value.expand(x.shape[0]), mask_id, generator).to(device)
            with autocast() if autocast else contextlib.nullcontext():
                h = diffusion.masked_hidden(model, batch, n_loops)
                total += diffusion.linear_cross_entropy(h, head, batch.targets, batch.weight).item()
            tokens += x.numel()
    return total / tokens


def timed(fn, device, repeats: int) -> tuple[float, float]:
    value = fn()  # warm-up: compiles the shapes this evaluation uses
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        value = fn()
    return (time.perf_counter() - start) / repeats, value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig(n_layers=8, d_model=256, n_heads=4, loop_start=2, loop_end=4, n_loops=2, vocab_size=4097)
    torch.manual_seed(0)
    model = LoopMDM(cfg, "cudnn" if device.type == "cuda" else "sdpa").to(device).eval()
    if device.type == "cuda":
        for layer in model.layers:
            layer.compile()  # as train.compile does
    batches = [torch.randint(0, 4096, (32, 256), generator=torch.Generator().manual_seed(i)) for i in range(8)]
    autocast = autocast_for(device, "auto")
    rows = []
    for n_loops in (1, 2, 3, 4):
        before_s, before = timed(lambda: one_forward_per_ratio(model, batches, 4096, 8, 1234, n_loops, autocast),
                                 device, args.repeats)
        after_s, after = timed(lambda: diffusion.validation_losses(model, batches, 4096, 8, 1234, n_loops,
                                                                   autocast)[0], device, args.repeats)
        rows.append({"n_loops": n_loops, "before_s": before_s, "after_s": after_s, "speedup": before_s / after_s,
                     "loss_before": before, "loss_after": after})
        print(f"n_loops {n_loops}: one forward per ratio {before_s * 1e3:7.1f} ms, validation_losses "
              f"{after_s * 1e3:7.1f} ms ({before_s / after_s:.2f}x); loss {before:.6f} vs {after:.6f}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    total = sum(r["before_s"] for r in rows) / sum(r["after_s"] for r in rows)
    print(f"{name}: an inference probe at 1..4 loops, {total:.2f}x faster")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows,
                                              "speedup_1_to_4_loops": total}, indent=1))


if __name__ == "__main__":
    main()
