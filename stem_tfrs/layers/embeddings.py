"""Raw categorical ids -> one embedding per table (per task and shared), in one gather."""

from __future__ import annotations

from typing import Dict, List, Sequence

import tensorflow as tf

from stem_tfrs.data.schema import PADDING


def _lookup_layer(feature: dict) -> tf.keras.layers.Layer:
  """Raw values -> row index in [0, num_rows); unknown values -> row 0 (OOV)."""
  name = f"lookup_{feature['name']}"
  if feature.get("hash_buckets"):
    return tf.keras.layers.Hashing(feature["hash_buckets"], name=name)
  lookup = (tf.keras.layers.StringLookup if feature.get("dtype", "string") == "string"
            else tf.keras.layers.IntegerLookup)
  return lookup(vocabulary=feature["vocabulary_file"], num_oov_indices=1,
                mask_token=None, name=name)


def _num_rows(feature: dict) -> int:
  if feature.get("hash_buckets"):
    return int(feature["hash_buckets"])
  return int(feature["vocabulary_size"]) + 1


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class FieldEmbedding(tf.keras.layers.Layer):
  """Embeds F categorical fields in T+1 tables (T tasks + shared) with one gather.

  Every field f has one table per entry of `table_names`, each of width D. They
  are stored as one fused variable of shape [R, D * len(table_names)], where R
  is the total number of rows of all fields (each field's vocabulary plus its
  OOV row 0, fields stacked in order). Columns [k*D, (k+1)*D) of the fused
  table are table `table_names[k]`: the task tables in task order, then
  `shared` last. The variable is named `fused`, or `shared` when the layer
  has the single shared table of the shared-embedding baselines.

  Rows are read with `tf.nn.embedding_lookup`, which also reads a table
  sharded across parameter servers (a `ShardedVariable`) shard by shard.

  The raw ids are mapped to rows inside the layer (`StringLookup`,
  `IntegerLookup` or `Hashing`), so an exported model takes raw ids, and ids
  never seen in training map to the field's OOV row instead of failing.

  A multivalent field (a list of values per example, padded with "" or -1)
  is the mean of its values' rows, padding excluded (zeros for an empty
  list).

  With `embedding_l2 > 0`, the layer adds the loss
  `embedding_l2 * sum(rows ** 2) / B` over the rows gathered for the batch
  (all tables), not over whole tables: its cost grows with the batch, not
  with the vocabulary. (Under a synchronous strategy, B is the global batch:
  each replica adds its share.)

  Example:

      embedding = FieldEmbedding(
          [{"name": "uid", "vocabulary_file": "vocab/uid.txt",
            "vocabulary_size": 100}],
          table_names=["finish", "like", "shared"], embedding_dim=16)
      x_finish, x_like, x_shared = embedding({"uid": tf.constant(["u1"])})

  Args:
    features: One dict per field: `name`, `dtype` ("string" or "int64"),
      either `vocabulary_file` + `vocabulary_size` or `hash_buckets`, and
      `multivalent` (the fields of `stem_tfrs.data.schema.CategoricalFeature`).
    table_names: Names of the tables, task tables first, "shared" last.
    embedding_dim: D.
    embedding_l2: Factor of the per-batch L2 penalty on the gathered rows.

  Input: dict field name -> raw ids of shape [B] (or [B, 1]); [B, L] for a
    multivalent field.
  Output: list of len(table_names) tensors of shape [B, F * D], in
    `table_names` order.
  """

  def __init__(self, features: Sequence[dict], table_names: Sequence[str],
               embedding_dim: int, embedding_l2: float = 0.0,
               embeddings_initializer="truncated_normal", **kwargs):
    super().__init__(**kwargs)
    if not features:
      raise ValueError("FieldEmbedding needs at least one feature")
    if not table_names:
      raise ValueError("FieldEmbedding needs at least one table name")
    if embedding_dim < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    if embedding_l2 < 0:
      raise ValueError(f"embedding_l2 must be >= 0, got {embedding_l2}")
    self.features = [dict(f) for f in features]
    self.table_names = list(table_names)
    self.embedding_dim = int(embedding_dim)
    self.embedding_l2 = float(embedding_l2)
    self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
    self._lookups = [_lookup_layer(f) for f in self.features]
    offsets, total = [], 0
    for feature in self.features:
      offsets.append(total)
      total += _num_rows(feature)
    self._offsets = offsets
    self.num_rows = total

  @property
  def field_names(self) -> List[str]:
    return [f["name"] for f in self.features]

  def build(self, input_shape):
    width = self.embedding_dim * len(self.table_names)
    name = "fused" if len(self.table_names) > 1 else self.table_names[0]
    self.table = self.add_weight(
        name=name, shape=[self.num_rows, width],
        initializer=self.embeddings_initializer)
    super().build(input_shape)

  def call(self, inputs: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
    single_positions, single_rows, pooled_positions, pooled = [], [], [], []
    penalty = []
    for position, (feature, lookup, offset) in enumerate(
        zip(self.features, self._lookups, self._offsets)):
      raw = inputs[feature["name"]]
      if feature.get("multivalent"):
        if raw.shape.rank == 1:  # one value per example
          raw = raw[:, None]
        rows = tf.nn.embedding_lookup(self.table, tf.cast(lookup(raw), tf.int32) + offset)
        mask = tf.cast(tf.not_equal(raw, PADDING[feature.get("dtype", "string")]),
                       rows.dtype)[..., None]                                  # [B, L, 1]
        rows *= mask
        penalty.append(tf.reduce_sum(tf.square(rows)))
        pooled.append(tf.reduce_sum(rows, axis=1)
                      / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0))          # [B, W]
        pooled_positions.append(position)
      else:
        single_rows.append(tf.cast(lookup(tf.reshape(raw, [-1])), tf.int32) + offset)
        single_positions.append(position)
    parts = []
    if single_rows:
      embedded = tf.nn.embedding_lookup(                     # [B, F1, W]: one gather
          self.table, tf.stack(single_rows, axis=1))
      penalty.append(tf.reduce_sum(tf.square(embedded)))
      parts.append(embedded)
    if pooled:
      parts.append(tf.stack(pooled, axis=1))                            # [B, F2, W]
    embedded = tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    order = single_positions + pooled_positions
    if order != sorted(order):  # back to schema order
      embedded = tf.gather(embedded, sorted(range(len(order)), key=order.__getitem__), axis=1)
    if self.embedding_l2:
      # Per replica: its share of the global-batch mean (R replicas sum their gradients).
      batch = tf.cast(tf.shape(embedded)[0]
                      * tf.distribute.get_strategy().num_replicas_in_sync, embedded.dtype)
      self.add_loss(tf.cast(self.embedding_l2 * tf.add_n(penalty) / tf.maximum(batch, 1.0),
                            tf.float32))  # float32 beside the task losses, whatever the policy
    num_fields, num_tables = len(self.features), len(self.table_names)
    embedded = tf.reshape(embedded, [-1, num_fields, num_tables, self.embedding_dim])
    # One split along the table axis (its gradient one concat): faster, forward
    # and backward, than strided slices or a transpose to table-major and an
    # unstack, whose oneDNN _MklTranspose waits on the busy thread pool at
    # serving (benchmarks/train_throughput.py, benchmarks/serving.py).
    tables = tf.split(embedded, num_tables, axis=2)                   # T+1 x [B, F, 1, D]
    return [tf.reshape(table, [-1, num_fields * self.embedding_dim]) for table in tables]

  def get_config(self):
    config = super().get_config()
    config.update(
        features=self.features, table_names=self.table_names,
        embedding_dim=self.embedding_dim, embedding_l2=self.embedding_l2,
        embeddings_initializer=tf.keras.initializers.serialize(
            self.embeddings_initializer))
    return config
