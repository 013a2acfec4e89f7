"""Inference-time evaluation of a trained model: validation ELBO as a function of the loop count.

More loops at inference = more compute: `loop_scaling` scores the same weights at n_loops = 1..K (beyond the
training count too) on the fixed validation work of diffusion.validation_elbo, with the forward FLOPs per
token each loop count costs, so loss can be read against inference compute.
"""

from . import diffusion, flops


def loop_scaling(model, batches, mask_id: int, loops, n_t: int = 8, seed: int = 1234, autocast=None) -> list[dict]:
    """One row per loop count: {"n_loops", "val_loss", "val_ppl", "forward_flops_per_token"}."""
    was_training = model.training
    model.eval()
    seq_len = batches[0].shape[1]
    rows = []
    for k in loops:
        loss = diffusion.validation_elbo(model, batches, mask_id, n_t, seed, n_loops=k, autocast=autocast)
        rows.append({"n_loops": k, "val_loss": loss, "val_ppl": diffusion.perplexity(loss),
                     "forward_flops_per_token": flops.forward_flops_per_token(model.cfg, seq_len, k)})
    model.train(was_training)
    return rows
