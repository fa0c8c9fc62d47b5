"""ttslens.sae — sparse autoencoders on any transformer's residual stream."""

from ttslens.sae import batchtopk, hierarchical, kron, relu, topk  # noqa: F401  (register architectures)
from ttslens.sae.base import ARCHITECTURES, SAE, ForwardOutput, SAEConfig, make_sae

__all__ = ["ARCHITECTURES", "SAE", "ForwardOutput", "SAEConfig", "make_sae"]
