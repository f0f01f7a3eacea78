"""Single-task models: one independent embedding table, bottom and tower per task."""

from __future__ import annotations

from typing import List, Optional

import tensorflow as tf

from stem_tfrs.config import ModelConfig
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.data.schema import Schema


class SingleTask(MultiTaskRankingModel):
  """T single-task models trained side by side, reported as one row.

  Task t has its own embedding table, its own bottom MLP (the experts' widths)
  and its own tower; no parameter is shared, so task t's loss has zero
  gradient on every other task's parameters and training them together is
  training them apart (Adam keeps per-parameter state). Early stopping and
  checkpoint selection use the mean validation AUC of all tasks, as for the
  multi-task models.
  """

  embedding_tables = "tasks"

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = "single_task"):
    super().__init__(schema, config, name=name)
    self.bottoms = self.task_bottoms()

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    return [bottom(x, training=training) for bottom, x in zip(self.bottoms, embeddings)]
