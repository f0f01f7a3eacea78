"""ESMM: entire-space multi-task model, p(task t) = prod_{s <= t} p(task s | task s-1)."""

from __future__ import annotations

from typing import Dict, List, Optional

import tensorflow as tf

from stem_tfrs.config import ModelConfig
from stem_tfrs.models.base import Features, MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


def logit_of_product(logits: List[tf.Tensor]) -> tf.Tensor:
  """logit(prod_s sigmoid(a_s)), computed in log space: [B] each -> [B]."""
  log_p = tf.add_n([tf.math.log_sigmoid(a) for a in logits])
  log_p = tf.minimum(log_p, -1e-7)  # p < 1, so that log(1 - p) is finite
  return log_p - tf.math.log(-tf.math.expm1(log_p))


class ESMM(MultiTaskRankingModel):
  """ESMM (Ma et al., SIGIR 2018), generalized to a funnel of T tasks.

  Each task has its own network on the shared embedding: a bottom MLP of the
  experts' widths (`--expert_hidden_units`; the authors' ESMM towers are
  512,512,512), then its tower. Network 1 predicts task 1; network t > 1
  predicts task t *given* task t-1, and the model outputs

      p(task t) = p(task 1) * prod_{s=2..t} p(task s | task s-1)

  so every loss is taken over the entire impression space. This is only
  meaningful when the tasks form a funnel in schema order, i.e. a positive in
  task t implies a positive in task t-1 (click -> conversion; for TikTok's
  finish -> like it is an assumption the data does not guarantee: a user may
  like a video without finishing it).
  """

  assumes_funnel = True

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "esmm"):
    super().__init__(schema, config, name=name)
    self.bottoms = self.task_bottoms()

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    return [bottom(embeddings[0], training=training) for bottom in self.bottoms]

  def compute_logits(self, features: Features,
                     training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    conditional = super().compute_logits(features, training=training)
    chain = [conditional[task] for task in self.task_names]
    return {task: chain[0] if t == 0 else logit_of_product(chain[:t + 1])
            for t, task in enumerate(self.task_names)}
