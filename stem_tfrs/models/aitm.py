"""AITM: task towers in funnel order, each receiving what the previous task learned."""

from __future__ import annotations

from typing import Dict, List, Optional

import tensorflow as tf

from stem_tfrs.config import ModelConfig
from stem_tfrs.layers import MLP
from stem_tfrs.layers.ait import AITAttention
from stem_tfrs.models.base import Labels, MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


class AITM(MultiTaskRankingModel):
  """AITM (Xi et al., KDD 2021) on the shared embedding.

  Task t has its own bottom MLP (`--expert_hidden_units`) giving q_t. For
  t > 1, a transfer MLP carries task t-1's final representation z_{t-1}
  forward, p_t = Transfer_t(z_{t-1}), and the AIT attention mixes it with
  q_t: z_t = AIT_t(p_t, q_t) (z_1 = q_1). Information moves one way only,
  from task t-1 to task t: task t-1's prediction never depends on task t's
  parameters, while task t's loss does reach task t-1's bottom through the
  transfer (no stop_gradient, as in the paper). The transfer and AIT
  sub-layers are named after the receiving task.

  The loss adds the paper's calibration term, which asks the funnel to hold
  (p_t <= p_{t-1}): `calibration_weight * sum_t mean(relu(p_t - p_{t-1}))`.
  """

  assumes_funnel = True
  calibration_weight = 0.6

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "aitm"):
    super().__init__(schema, config, name=name)
    width = config.expert_hidden_units[-1]
    self.bottoms = self.task_bottoms()
    kernel = self.weight_initializers.kernel
    self.transfers = [MLP([width], kernel_initializer=kernel, name=f"transfer_{task}")
                      for task in self.task_names[1:]]
    self.attentions = [AITAttention(width, kernel_initializer=kernel, name=f"ait_{task}")
                       for task in self.task_names[1:]]

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    own = [bottom(embeddings[0], training=training) for bottom in self.bottoms]
    z = [own[0]]
    for q, transfer, attention in zip(own[1:], self.transfers, self.attentions):
      z.append(attention((transfer(z[-1], training=training), q)))
    return z

  def auxiliary_loss(self, logits: Dict[str, tf.Tensor], labels: Labels) -> tf.Tensor:
    probabilities = [tf.nn.sigmoid(logits[task]) for task in self.task_names]
    excess = [tf.reduce_mean(tf.nn.relu(later - earlier))
              for earlier, later in zip(probabilities, probabilities[1:])]
    return self.calibration_weight * tf.add_n(excess) if excess else 0.0
