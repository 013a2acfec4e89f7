"""Weighted cross-entropy of a chunk of logits and its gradient, in one Triton kernel (CUDA).

The chunked head in diffusion.py needs, for each row r of a (rows x vocab) logits chunk z: the loss
w_r * (logsumexp(z_r) - z_r[target_r]) and the gradient w_r * (softmax(z_r) - onehot(target_r)). It is memory
bound: the least it can move is one read of the logits and one write of the gradient. Here a persistent grid
takes rows in turn; each row is read once for its running max and sum (online softmax, fp32), read again for the
gradient, which is written over the logits in place (they are not needed after). On an H100, for 16384 x 50304
bf16 logits: 1.65 ms, against 3.07 ms for torch.compile of diffusion._ce_chunk and 1.09 ms for a plain copy of
the same bytes (read + write); block 8192, 8 programs per multiprocessor and 16 warps were the best of 36
configurations tried.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _weighted_ce_kernel(z_ptr, stride, targets_ptr, weight_ptr, loss_ptr, n_rows, vocab,
                        WITH_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        row_ptr = z_ptr + row.to(tl.int64) * stride
        # -1e30, not -inf, as the start: exp(m - m_new) stays defined while a lane has seen nothing yet
        m = tl.full((), -1e30, tl.float32)
        s = tl.zeros((), tl.float32)
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(row_ptr + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(z, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
            m = m_new
        lse = m + tl.log(s)
        target = tl.load(targets_ptr + row)
        w = tl.load(weight_ptr + row)
        tl.store(loss_ptr + row, w * (lse - tl.load(row_ptr + target).to(tl.float32)))
        if WITH_GRAD:
            for start in range(0, vocab, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                z = tl.load(row_ptr + cols, mask=cols < vocab, other=0.0).to(tl.float32)
                g = tl.exp(z - lse) - tl.where(cols == target, 1.0, 0.0)
                tl.store(row_ptr + cols, (w * g).to(z_ptr.dtype.element_ty), mask=cols < vocab)


def weighted_ce_(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, with_grad: bool,
                 block: int = 8192, programs_per_sm: int = 8, num_warps: int = 16):
    """sum_r weight_r * CE(logits_r, targets_r) as an fp32 scalar, and, when `with_grad`, its gradient with
    respect to the logits, written INTO `logits` (returned as the second value; None otherwise)."""
    rows, vocab = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("weighted_ce_ needs rows with unit stride")
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows:
        sms = torch.cuda.get_device_properties(logits.device).multi_processor_count
        grid = (min(rows, programs_per_sm * sms),)
        _weighted_ce_kernel[grid](logits, logits.stride(0), targets, weight.float(), loss, rows, vocab,
                                  WITH_GRAD=with_grad, BLOCK=block, num_warps=num_warps)
    return loss.sum(), (logits if with_grad else None)
