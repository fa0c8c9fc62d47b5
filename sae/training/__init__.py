"""SAE training: config, loop, checkpoints, distributed plumbing."""

from ttslens.sae.training.config import TrainConfig
from ttslens.sae.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
