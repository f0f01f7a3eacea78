"""STEM-Net and its ablation ME-MMoE: task + shared embeddings, stacked STEM layers."""

from __future__ import annotations

from typing import List, Optional

import tensorflow as tf

from stem_tfrs.config import ModelConfig
from stem_tfrs.layers import STEMLayer
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


class STEMNet(MultiTaskRankingModel):
  """STEM-Net (Su et al., AAAI 2024): T+1 embedding tables and stacked STEM layers.

  Layer 1 reads (x_1..x_T, x_S), the task and shared embeddings; layer l+1
  reads layer l's (h_1..h_T, h_S). The last layer skips the shared gate, whose
  output nothing would read. Towers sit on the last layer's h_1..h_T.
  See `stem_tfrs.layers.STEMLayer` for the AFTB gate.
  """

  embedding_tables = "tasks_and_shared"
  #: All Forward, Task-specific Backward (False: ME-MMoE).
  aftb = True

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "stem"):
    super().__init__(schema, config, name=name)
    last = config.num_layers - 1
    self.stem_layers = [
        STEMLayer(self.task_names,
                  num_shared_experts=config.num_shared_experts,
                  num_specific_experts=config.num_specific_experts,
                  expert_hidden_units=config.expert_hidden_units,
                  gate_hidden_units=config.gate_hidden_units,
                  dropout=config.net_dropout, batch_norm=config.batch_norm,
                  output_shared=i < last, aftb=self.aftb,
                  kernel_initializer=self.weight_initializers.kernel, name=f"stem_layer_{i}")
        for i in range(config.num_layers)]

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    x = embeddings
    for layer in self.stem_layers:
      x = layer(x, training=training)
    return x

  def gate_weights(self, features):
    x = self.inputs_of(features)
    for layer in self.stem_layers[:-1]:
      x = layer(x)
    return self.stem_layers[-1].gates_with_owners(x)


class MEMMoE(STEMNet):
  """ME-MMoE: STEM-Net's embeddings, experts and gates without the AFTB stop_gradient.

  Every gate mixes every task's experts and the shared ones, and every task's
  loss trains all of them: the multi-embedding ablation that isolates what
  AFTB adds.
  """

  aftb = False

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "me_mmoe"):
    super().__init__(schema, config, name=name)
