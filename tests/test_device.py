import pytest
import torch

from loopmdm_core.device import autocast_for, known_peak, mfu, peak_flops, pick_device
from loopmdm_core.errors import ConfigError


def test_device_and_autocast_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device"):
            pick_device("cuda")
    cpu = torch.device("cpu")
    assert autocast_for(cpu, "auto") is None and autocast_for(cpu, "fp32") is None
    with autocast_for(cpu, "bf16")():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_peak_and_mfu():
    assert known_peak("NVIDIA H100 80GB HBM3") == 989.4e12 and known_peak("Some Card") is None
    assert peak_flops(0.0, torch.device("cpu")) is None  # no honest peak on a CPU: MFU is not logged
    assert peak_flops(5e12, torch.device("cpu")) == 5e12
    assert mfu(6e12, 2.0, 1e13) == 0.3
    assert mfu(6e12, 2.0, 1e13, devices=3) == pytest.approx(0.1)
    assert mfu(6e12, 2.0, None) is None
