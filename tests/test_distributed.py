from loopmdm_core.distributed import GPU_HOST_THREADS, threads_per_rank


def test_cpu_ranks_share_the_cores_and_gpu_ranks_keep_few_host_threads():
    assert threads_per_rank(2, use_cuda=False, available=32) == 16  # CPU ranks compute with their threads
    assert threads_per_rank(2, use_cuda=True, available=32) == GPU_HOST_THREADS  # GPU ranks only launch kernels
    assert threads_per_rank(4, use_cuda=True, available=8) == 2  # never more than a rank's share
    assert threads_per_rank(3, use_cuda=False, available=2) == 1
