"""loopmdm_core: looped masked diffusion language models (LoopMDM) trained on a FLOPs budget.

Torch-only training library; it never imports Ray, MLflow or Optuna. Importing it has no side effects.
"""

from .config import DataConfig, EvalConfig, RunConfig, TrainConfig, flatten, load_run_config
from .errors import CheckpointError, ConfigError, DataError, LoopMDMError
from .model import LoopMDM, ModelConfig, depth_matched, same_size
from .plan import RunPlan, plan
from .train import TrainResult, train

__all__ = [
    "CheckpointError", "ConfigError", "DataConfig", "DataError", "EvalConfig", "LoopMDM", "LoopMDMError",
    "ModelConfig", "RunConfig", "RunPlan", "TrainConfig", "TrainResult", "depth_matched", "flatten",
    "load_run_config", "plan", "same_size", "train",
]
