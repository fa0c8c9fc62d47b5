"""SAE training: config, loop, checkpoints, distributed plumbing."""

from sae.training.config import TrainConfig
from sae.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
