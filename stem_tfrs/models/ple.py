"""PLE and ME-PLE: stacked CGC levels on a shared table, or on task + shared tables."""

from __future__ import annotations

from typing import List, Optional

import tensorflow as tf

from stem_tfrs.config import ModelConfig
from stem_tfrs.layers.moe import CGCLayer
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


class PLE(MultiTaskRankingModel):
  """PLE (Tang et al., RecSys 2020): `num_layers` CGC levels.

  Level 1 gives the shared embedding to every task's experts and to the shared
  experts; level l+1 reads level l's (h_1..h_T, h_S). Task t's gate mixes only
  its own and the shared experts.
  """

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "ple"):
    super().__init__(schema, config, name=name)
    last = config.num_layers - 1
    self.cgc_layers = [
        CGCLayer(self.task_names, num_shared_experts=config.num_shared_experts,
                 num_specific_experts=config.num_specific_experts,
                 expert_hidden_units=config.expert_hidden_units,
                 gate_hidden_units=config.gate_hidden_units, dropout=config.net_dropout,
                 batch_norm=config.batch_norm, output_shared=i < last,
                 kernel_initializer=self.weight_initializers.kernel, name=f"cgc_layer_{i}")
        for i in range(config.num_layers)]

  def first_level_inputs(self, embeddings: List[tf.Tensor]) -> List[tf.Tensor]:
    """PLE: the one shared embedding, for each task and for the shared experts."""
    return embeddings * (len(self.task_names) + 1)

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    x = self.first_level_inputs(embeddings)
    for layer in self.cgc_layers:
      x = layer(x, training=training)
    return x

  def gate_weights(self, features):
    x = self.first_level_inputs(self.inputs_of(features))
    for layer in self.cgc_layers[:-1]:
      x = layer(x)
    return self.cgc_layers[-1].gates_with_owners(x)


class MEPLE(PLE):
  """ME-PLE: PLE whose level 1 reads task t's own embedding table for task t's
  experts and gate, and the shared table for the shared experts (T+1 tables)."""

  embedding_tables = "tasks_and_shared"

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "me_ple"):
    super().__init__(schema, config, name=name)

  def first_level_inputs(self, embeddings: List[tf.Tensor]) -> List[tf.Tensor]:
    return list(embeddings)
