"""ttslens.sae — sparse autoencoders on any transformer's residual stream."""

from sae import batchtopk, hierarchical, kron, relu, topk  # noqa: F401  (register architectures)
from sae.base import ARCHITECTURES, SAE, ForwardOutput, SAEConfig, make_sae

__all__ = ["ARCHITECTURES", "SAE", "ForwardOutput", "SAEConfig", "make_sae"]
