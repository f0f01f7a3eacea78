"""Keras layers of stem_tfrs: embeddings, numeric inputs, MLPs, the STEM layer and the baselines'
layers."""

from stem_tfrs.layers.ait import AITAttention
from stem_tfrs.layers.embeddings import FieldEmbedding
from stem_tfrs.layers.mlp import MLP, ExpertGroup
from stem_tfrs.layers.moe import CGCLayer, MMoELayer
from stem_tfrs.layers.numeric import NumericInputs
from stem_tfrs.layers.stem import STEMLayer

__all__ = ["AITAttention", "CGCLayer", "ExpertGroup", "FieldEmbedding", "MLP", "MMoELayer",
           "NumericInputs", "STEMLayer"]
