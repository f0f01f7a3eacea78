"""Keras layers of stem_tfrs: embeddings, MLPs and the STEM layer."""

from stem_tfrs.layers.embeddings import FieldEmbedding
from stem_tfrs.layers.mlp import MLP, ExpertGroup
from stem_tfrs.layers.stem import STEMLayer

__all__ = ["FieldEmbedding", "MLP", "ExpertGroup", "STEMLayer"]
