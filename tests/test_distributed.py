import torch

from loopmdm_core.diffusion import antithetic_t
from loopmdm_core.distributed import GPU_HOST_THREADS, rank_rows, threads_per_rank


def test_cpu_ranks_share_the_cores_and_gpu_ranks_keep_few_host_threads():
    assert threads_per_rank(2, use_cuda=False, available=32) == 16  # CPU ranks compute with their threads
    assert threads_per_rank(2, use_cuda=True, available=32) == GPU_HOST_THREADS  # GPU ranks only launch kernels
    assert threads_per_rank(4, use_cuda=True, available=8) == 2  # never more than a rank's share
    assert threads_per_rank(3, use_cuda=False, available=2) == 1


def test_rank_shares_partition_the_batch_with_the_same_spread_of_mask_ratios():
    t = antithetic_t(64, torch.Generator().manual_seed(0))
    shares = [t[rank_rows(rank, 4)] for rank in range(4)]
    assert sorted(torch.cat(shares).tolist()) == sorted(t.tolist())  # every row once, each rank a quarter
    assert all(len(s) == 16 for s in shares)
    means = [s.mean().item() for s in shares]
    # Strided, each rank's t are spaced 1/16 over [0, 1): means within 1/16. Contiguous quarters: up to 0.75 apart.
    assert max(means) - min(means) < 1 / 16
