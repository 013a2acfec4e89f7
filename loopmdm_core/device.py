"""Where a run computes, and how fast that device can go: device choice, autocast, the peak MFU divides by."""

import time

import torch

from .errors import ConfigError

# Dense bf16 peaks from the vendors' datasheets, for MFU on known cards (substring of the device name -> FLOP/s).
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "4090": 165.2e12}


def pick_device(name: str) -> torch.device:
    """train.device: `auto` is CUDA when torch sees it, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked, but torch sees no CUDA device; use auto or cpu")
    return device


def autocast_for(device: torch.device, dtype: str):
    """A factory of autocast contexts: bf16 on CUDA by default, plain fp32 on CPU (None: no autocast)."""
    use_bf16 = dtype == "bf16" or (dtype == "auto" and device.type == "cuda")
    if not use_bf16:
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def known_peak(device_name: str) -> float | None:
    for key, peak in PEAK_BF16.items():
        if key in device_name:
            return peak
    return None


def measured_peak(device: torch.device, trials: int = 1, reps: int = 4) -> float:
    """A matmul ceiling measured on the spot (FLOP/s) in the training dtype, best of `trials` timings of `reps`
    products: for MFU on CUDA cards with no datasheet peak, and for benchmarks/throughput.py."""
    n = 1024 if device.type == "cpu" else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def peak_flops(cfg_peak: float, device: torch.device) -> float | None:
    """The FLOP/s that MFU divides by: train.peak_flops, else the card's datasheet bf16 peak, else one measured
    on an unknown CUDA card. None on a CPU: a matmul timed there undercounts what the training step's kernels
    reach (a run's metrics read MFU 1.59 against one), so no honest peak is known and MFU is not logged."""
    if cfg_peak:
        return cfg_peak
    if device.type != "cuda":
        return None
    return known_peak(torch.cuda.get_device_name(device)) or measured_peak(device)


def mfu(flops: float, seconds: float, peak: float | None, devices: int = 1) -> float | None:
    """Model FLOPs utilisation: `flops` done in `seconds` over the peak of the `devices` that shared them; None
    without a peak. Above 1 the peak is wrong, not the run fast: a caller that logs MFU drops it then."""
    return flops / seconds / (peak * devices) if peak else None
