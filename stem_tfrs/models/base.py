"""The multi-task ranking model every architecture shares: embeddings -> backbone -> towers -> tasks."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import tensorflow as tf
import tensorflow_recommenders as tfrs

from stem_tfrs.config import ModelConfig
from stem_tfrs.layers import MLP, FieldEmbedding, NumericInputs
from stem_tfrs.layers.initializers import Initializers, initializers
from stem_tfrs.data.schema import Schema

Features = Dict[str, tf.Tensor]
Labels = Dict[str, tf.Tensor]


#: What tfrs.Model's train and test steps return besides the tasks' metrics.
_LOSS_KEYS = ("loss", "regularization_loss", "total_loss")


class _Untracked:
  """Holds objects out of Keras' attribute tracking (and so out of checkpoints)."""

  def __init__(self, items: dict):
    self.items = items


class MultiTaskRankingModel(tfrs.Model):
  """A `tfrs.Model` with one tower and one `tfrs.tasks.Ranking` head per task.

  Architectures differ only in the backbone between the embeddings and the
  towers: a subclass sets `embedding_tables` and implements `backbone`.

      embeddings = FieldEmbedding(features)        one [B, F*D] per table
      (numeric   = NumericInputs(features)         [B, N], appended to each, if any)
      hidden     = self.backbone(embeddings)       T x [B, H]
      logit_t    = Tower_t(hidden[t])              [B]
      loss       = sum_t w_t * BCE(label_t, sigmoid(logit_t))  (+ embedding L2)

  `call` returns probabilities, so `model.predict` and the SavedModel give
  what users serve; `compute_logits` returns the logits the losses use.

  Args:
    schema: The prepared data set's schema (features and tasks).
    config: Architecture hyper-parameters.
  """

  #: The embedding tables the architecture reads: "shared" (one table, the
  #: shared-embedding baselines), "tasks_and_shared" (one per task, then the
  #: shared one: STEM and the ME baselines) or "tasks" (single-task models).
  embedding_tables: str = "shared"
  #: Whether the architecture assumes the tasks form a funnel in schema order
  #: (a positive in task t is a positive in task t-1): ESMM and AITM.
  assumes_funnel: bool = False

  def __init__(self, schema: Schema, config: ModelConfig, name: Optional[str] = None):
    # No autocast of the inputs: numeric features reach `NumericInputs` as float32 under a
    # mixed policy (the ids are strings and integers, which autocast leaves alone anyway).
    super().__init__(name=name, autocast=False)
    self.schema = schema
    self.config = config
    self.task_names: List[str] = schema.tasks
    self.loss_weights: Tuple[float, ...] = config.task_loss_weights(self.task_names)
    features = [dataclasses.asdict(f) for f in schema.features]
    for feature in features:
      if feature["vocabulary_file"]:
        feature["vocabulary_file"] = schema.path(feature["vocabulary_file"])
    tables = {"shared": ["shared"], "tasks_and_shared": self.task_names + ["shared"],
              "tasks": list(self.task_names)}[self.embedding_tables]
    self.embedding = FieldEmbedding(
        features, table_names=tables, embedding_dim=config.embedding_dim,
        embedding_l2=config.embedding_l2,
        embeddings_initializer=self.weight_initializers.embeddings, name="embedding")
    self.numeric = (NumericInputs([dataclasses.asdict(f) for f in schema.numeric_features],
                                  name="numeric") if schema.numeric_features else None)
    self.towers = [MLP(config.tower_hidden_units, output_units=1,
                       dropout=config.net_dropout, batch_norm=config.batch_norm,
                       kernel_initializer=self.weight_initializers.kernel,
                       name=f"tower_{task}") for task in self.task_names]
    self.ranking_tasks = [
        tfrs.tasks.Ranking(
            # Per-example losses, averaged over the global batch in
            # `compute_loss`: Keras forbids AUTO reduction under a strategy.
            loss=tf.keras.losses.BinaryCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
            # float32 counters whatever the policy: bfloat16 cannot count past 256.
            metrics=[tf.keras.metrics.AUC(from_logits=True, name=f"{task}_auc",
                                          dtype=tf.float32)],
            loss_metrics=[tf.keras.metrics.Mean(name=f"{task}_loss", dtype=tf.float32)],
            name=f"ranking_{task}")
        for task in self.task_names]

    # Metric results are already global on every replica (synced on read);
    # the logs take replica 0's instead of summing R copies.
    self.distribute_reduction_method = "first"
    # Keras logs at an epoch's end the last batch's value of whatever `train_step` returns
    # that is not a metric: tfrs.Model's losses. These means make them the epoch's, as the
    # tasks' losses are. Kept out of Keras' tracking, so that checkpoints hold what they held.
    self._loss_means = _Untracked({key: tf.keras.metrics.Mean(name=key, dtype=tf.float32)
                                   for key in _LOSS_KEYS})

  def train_step(self, inputs):
    return self._mean_losses(self._global_losses(super().train_step(inputs)), inputs)

  def test_step(self, inputs):
    return self._mean_losses(self._global_losses(super().test_step(inputs)), inputs)

  def reset_metrics(self):
    """Keras' reset at every epoch's and evaluation's start, the loss means' included."""
    super().reset_metrics()
    for mean in self._loss_means.items.values():
      mean.reset_state()

  def _mean_losses(self, logs: Dict[str, tf.Tensor], inputs) -> Dict[str, tf.Tensor]:
    """`logs` with each loss replaced by its mean over the examples since the last reset.

    A batch's loss counts once per example, as the tasks' losses (Keras means of
    per-example losses) count it: a short last batch weighs what it holds.
    """
    _, labels = inputs
    rows = tf.cast(tf.shape(labels[self.task_names[0]])[0], tf.float32)
    means = {key: mean for key, mean in self._loss_means.items.items() if key in logs}
    for key, mean in means.items():
      mean.update_state(logs[key], sample_weight=rows)
    return {**logs, **{key: mean.result() for key, mean in means.items()}}

  def _global_losses(self, logs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Replaces each replica's share of the losses in `logs` by their global sum."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
      return logs
    return {key: context.all_reduce("sum", value) if key in _LOSS_KEYS else value
            for key, value in logs.items()}

  @classmethod
  def check_config(cls, config: ModelConfig) -> None:
    """Raises ConfigError if the architecture cannot be built from `config` (before a run)."""

  @classmethod
  def data_warnings(cls, tasks: List[str], positive_rates: Dict[str, float]) -> List[str]:
    """What in the data breaks the architecture's assumptions, one line each (may be empty).

    A funnel model's task t can be no more frequent than task t-1: with
    p(t) > p(t-1) no p(t | t-1) fits, and the model is compared under a
    constraint the data breaks.
    """
    if not cls.assumes_funnel:
      return []
    return [f"{cls.__name__} assumes the tasks form a funnel in schema order ({upper} -> "
            f"{lower}), but {lower}'s train positive rate {positive_rates[lower]:.4f} is above "
            f"{upper}'s {positive_rates[upper]:.4f}: prepare the data with --tasks in funnel "
            f"order to compare it fairly"
            for upper, lower in zip(tasks, tasks[1:])
            if positive_rates.get(lower, 0.0) > positive_rates.get(upper, 1.0)]

  @property
  def weight_initializers(self) -> Initializers:
    """The embedding and kernel initializers of `config.initialization`, for the layers."""
    return initializers(self.config.initialization)

  def task_bottoms(self) -> List[MLP]:
    """One bottom MLP per task (`bottom_<task>`) with the experts' widths."""
    return [MLP(self.config.expert_hidden_units, dropout=self.config.net_dropout,
                batch_norm=self.config.batch_norm,
                kernel_initializer=self.weight_initializers.kernel, name=f"bottom_{task}")
            for task in self.task_names]

  def get_config(self) -> dict:
    return {"schema": dict(self.schema.to_json(), directory=self.schema.directory),
            "model_config": dataclasses.asdict(self.config), "name": self.name}

  @classmethod
  def from_config(cls, config: dict) -> "MultiTaskRankingModel":
    schema_json = dict(config["schema"])
    schema = Schema.from_json(schema_json, directory=schema_json.pop("directory"))
    return cls(schema, ModelConfig(**config["model_config"]), name=config.get("name"))

  def build_from_schema(self) -> "MultiTaskRankingModel":
    """Creates every weight by calling the model on one placeholder row.

    Keras builds subclassed models lazily; callbacks such as BackupAndRestore
    and `summary()` need the weights to exist first.
    """
    placeholder = {"string": tf.constant([""]), "int64": tf.constant([0], tf.int64)}
    features = {f.name: placeholder[f.dtype] for f in self.schema.features}
    features.update({name: tf.constant([0.0]) for name in self.schema.numeric_names})
    self(features, training=False)
    return self

  def inputs_of(self, features: Features) -> List[tf.Tensor]:
    """Raw features -> what the backbone reads: one [B, F*D (+ N)] tensor per table.

    The embedding tables' outputs (`FieldEmbedding`), each followed by the
    N standardized numeric columns when the schema has any: every expert and
    gate sees them, whichever table it reads.
    """
    embeddings = self.embedding(features)
    if self.numeric is None:
      return embeddings
    numeric = self.numeric(features)                                       # [B, N]
    return [tf.concat([e, tf.cast(numeric, e.dtype)], axis=-1) for e in embeddings]

  def backbone(self, embeddings: List[tf.Tensor],
               training: Optional[bool] = None) -> List[tf.Tensor]:
    """Embedding outputs -> one [B, H] representation per task."""
    raise NotImplementedError

  def gate_weights(self, features: Features) -> Optional[Dict[str, Tuple[tf.Tensor, List[str]]]]:
    """The last gated layer's mixture weights, for the gate analysis.

    Returns:
      {task: (weights [B, N], owner of each of the N experts: a task name or
      "shared")}, or None for architectures without gates.
    """
    return None

  def compute_logits(self, features: Features,
                     training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    """Raw features -> {task: logit [B]}."""
    hidden = self.backbone(self.inputs_of(features), training=training)
    # Logits, and so losses and probabilities, stay float32 under mixed precision.
    return {task: tf.cast(tf.squeeze(tower(h, training=training), axis=-1), tf.float32)
            for task, tower, h in zip(self.task_names, self.towers, hidden)}

  def call(self, features: Features, training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    """Raw features -> {task: probability [B]}."""
    return {task: tf.nn.sigmoid(logit)
            for task, logit in self.compute_logits(features, training).items()}

  def auxiliary_loss(self, logits: Dict[str, tf.Tensor], labels: Labels) -> tf.Tensor:
    """An architecture's own loss term beside the tasks' (AITM's calibration); 0 here."""
    return 0.0

  def compute_loss(self, inputs: Tuple[Features, Labels], training: bool = False) -> tf.Tensor:
    """Weighted sum of the tasks' mean BCE losses (+ `auxiliary_loss`); updates metrics.

    Under a synchronous strategy with R replicas each replica returns its
    share of the global-batch mean (`tf.nn.compute_average_loss`; the summed
    gradients are then those of the global mean), and on one device the plain
    mean. The embedding L2 penalty is not in it: the embedding layer adds it
    with `add_loss`, and `tfrs.Model` reports it as `regularization_loss`.
    """
    features, labels = inputs
    logits = self.compute_logits(features, training=training)
    loss = 0.0
    for task, weight, ranking in zip(self.task_names, self.loss_weights, self.ranking_tasks):
      per_example = ranking(labels=labels[task][:, None], predictions=logits[task][:, None],
                            training=training)                         # [B]
      loss += weight * tf.nn.compute_average_loss(per_example)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss + self.auxiliary_loss(logits, labels) / replicas
