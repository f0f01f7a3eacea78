"""Shared-Bottom: one MLP on the shared embedding feeds every task's tower."""

from __future__ import annotations

from typing import List, Optional

import tensorflow as tf

from stem_tfrs.config import ModelConfig
from stem_tfrs.layers import MLP
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


class SharedBottom(MultiTaskRankingModel):
  """Shared-Bottom (Caruana, 1997): hidden_t = Bottom(x_S) for every task t.

  The bottom has the experts' widths (`--expert_hidden_units`).
  """

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "shared_bottom"):
    super().__init__(schema, config, name=name)
    self.bottom = MLP(config.expert_hidden_units, dropout=config.net_dropout,
                      batch_norm=config.batch_norm,
                      kernel_initializer=self.weight_initializers.kernel, name="bottom_shared")

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    hidden = self.bottom(embeddings[0], training=training)
    return [hidden] * len(self.task_names)
