"""Data-parallel training on one machine: `launch(n, fn, ...)` runs fn on n ranks, this process being rank 0.

Rank 0 stays the caller's process, so whoever called (the CLI, a Ray Tune trial) keeps its metric sink,
checkpoints and MLflow run; ranks 1..n-1 are spawned processes that train in lockstep and report nothing.
Backend: NCCL on CUDA (rank r on GPU r), gloo on the CPU. train() reads the rank and world size from here.
"""

import datetime
import socket
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT = datetime.timedelta(minutes=30)  # a rank evaluating or checkpointing keeps the others waiting
# A GPU rank's host only draws masks and launches kernels: a few intra-op threads do it, and idle ones spin
# against the threads that launch (2 H100s, 32 cores, tokens/s of both: 16 threads per rank 881,750, 8 915,036,
# 4 911,312).
GPU_HOST_THREADS = 8


def threads_per_rank(n: int, use_cuda: bool, available: int | None = None) -> int:
    """Intra-op threads for each of n ranks: its share of the cores (CPU ranks compute with them), and on
    GPUs at most GPU_HOST_THREADS."""
    share = max(1, (available or torch.get_num_threads()) // n)
    return min(share, GPU_HOST_THREADS) if use_cuda else share


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_rows(rank: int, world: int) -> slice:
    """The rows of the global batch that `rank` trains on: rows rank, rank + world, ... Antithetic mask ratios
    (diffusion.antithetic_t) are evenly spaced in row order, so a strided share gives every rank the same spread
    of t and about as many masked tokens, i.e. as much head work. Contiguous shares split the range of t between
    the ranks, and each step waited for the busier one (2 H200s, same process: 60.3 and 60.6 ms/step strided,
    61.0 contiguous)."""
    return slice(rank, None, world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, port: int, use_cuda: bool):
    if use_cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=TIMEOUT)


def _child(rank: int, world: int, port: int, use_cuda: bool, threads: int, fn, args, kwargs):
    torch.set_num_threads(threads)
    try:
        _init(rank, world, port, use_cuda)
        fn(*args, **kwargs)
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(n: int, fn, args: tuple, main_kwargs: dict | None = None, worker_kwargs: dict | None = None,
           use_cuda: bool | None = None):
    """Run fn on n data-parallel ranks: rank 0 (here) as fn(*args, **main_kwargs), ranks 1..n-1 (spawned) as
    fn(*args, **worker_kwargs), so callbacks that only rank 0 uses (sinks, loggers) never need pickling.
    Returns rank 0's result; raises if any rank failed."""
    main_kwargs, worker_kwargs = main_kwargs or {}, worker_kwargs or {}
    if n <= 1:
        return fn(*args, **main_kwargs)
    use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if use_cuda and torch.cuda.device_count() < n:
        from .errors import ConfigError
        raise ConfigError(f"{n} data-parallel workers need {n} GPUs; this machine has {torch.cuda.device_count()}")
    port = _free_port()
    # Oversubscribed intra-op threads spin against the threads that launch the kernels (measured on 2 H100s:
    # 32 threads per rank on 32 cores made steps 1.6x slower).
    threads = threads_per_rank(n, use_cuda)
    ctx = mp.get_context("spawn")  # fork would copy a CUDA context or Ray's threads: unsafe
    children = [ctx.Process(target=_child, args=(r, n, port, use_cuda, threads, fn, args, worker_kwargs), daemon=True)
                for r in range(1, n)]
    for child in children:
        child.start()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _init(0, n, port, use_cuda)
        result = fn(*args, **main_kwargs)
    except BaseException:
        for child in children:
            child.kill()
        raise
    finally:
        torch.set_num_threads(old_threads)
        if dist.is_initialized():
            dist.destroy_process_group()
    for child in children:
        child.join(timeout=120)
    failed = [c.exitcode for c in children if c.exitcode != 0]
    if failed:
        raise RuntimeError(f"data-parallel worker(s) exited with {failed}; their traceback is in the output above")
    return result

