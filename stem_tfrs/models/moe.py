"""MMoE and OMoE: one shared embedding table, shared experts, a gate per task (or one)."""

from __future__ import annotations

from typing import List, Optional

import tensorflow as tf

from stem_tfrs.config import ConfigError, ModelConfig
from stem_tfrs.layers.moe import MMoELayer
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


class MMoE(MultiTaskRankingModel):
  """MMoE (Ma et al., KDD 2018): `num_shared_experts` experts on the shared
  embedding, one softmax gate per task. `num_layers` and
  `num_specific_experts` do not apply."""

  one_gate = False

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "mmoe"):
    super().__init__(schema, config, name=name)
    self.moe = MMoELayer(self.task_names, num_experts=config.num_shared_experts,
                         expert_hidden_units=config.expert_hidden_units,
                         gate_hidden_units=config.gate_hidden_units,
                         dropout=config.net_dropout, batch_norm=config.batch_norm,
                         one_gate=self.one_gate,
                         kernel_initializer=self.weight_initializers.kernel, name="mmoe_layer")

  @classmethod
  def check_config(cls, config: ModelConfig) -> None:
    if config.num_shared_experts < 1:
      raise ConfigError(f"{cls.__name__} mixes shared experts only: num_shared_experts must "
                        f"be >= 1, got {config.num_shared_experts}")

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    return self.moe(embeddings[0], training=training)

  def gate_weights(self, features):
    _, gates = self.moe(self.inputs_of(features)[0], return_gates=True)
    owners = ["shared"] * self.config.num_shared_experts
    return {task: (gates[i], owners) for i, task in enumerate(self.task_names)}


class OMoE(MMoE):
  """OMoE: MMoE with one gate shared by all tasks (the same expert mixture for each)."""

  one_gate = True

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "omoe"):
    super().__init__(schema, config, name=name)
