"""Numeric input columns as standardized values, fed beside the embeddings."""

from __future__ import annotations

from typing import Dict, List, Sequence

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class NumericInputs(tf.keras.layers.Layer):
  """N raw numeric columns -> one [B, N] tensor of standardized values.

  Column k gives z_k = (t(x_k) - mean_k) / std_k, where t is the identity or,
  with `log1p`, sign(x) * log(1 + |x|). A value that is NaN (missing) or
  infinite gives 0, the train mean. The statistics are constants of the
  layer (data_prep measures them on the train split); it has no weights.

  Example:

      numeric = NumericInputs([{"name": "duration", "mean": 2.9, "std": 0.8,
                                "log1p": True}])
      z = numeric({"duration": tf.constant([12.0, float("nan")])})   # [2, 1]

  Args:
    features: One dict per column: `name`, `mean`, `std`, `log1p` (the
      fields of `stem_tfrs.data.schema.NumericFeature`).

  Input: a dict holding each column as a [B] float tensor (other keys are
  ignored). Output: [B, N] in the layer's compute dtype.
  """

  def __init__(self, features: Sequence[dict], **kwargs):
    # Raw values stay float32 under a mixed policy: bfloat16 would round 1001 to 1000
    # before standardizing. Only the standardized output takes the compute dtype.
    kwargs["autocast"] = False
    super().__init__(**kwargs)
    if not features:
      raise ValueError("NumericInputs needs at least one column")
    self.features: List[dict] = [dict(f) for f in features]

  def call(self, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    columns = []
    for feature in self.features:
      x = tf.cast(inputs[feature["name"]], tf.float32)                       # [B]
      if feature.get("log1p"):
        x = tf.sign(x) * tf.math.log1p(tf.abs(x))
      z = (x - feature.get("mean", 0.0)) / feature.get("std", 1.0)
      columns.append(tf.where(tf.math.is_finite(z), z, tf.zeros_like(z)))
    return tf.cast(tf.stack(columns, axis=-1), self.compute_dtype)           # [B, N]

  def get_config(self):
    config = super().get_config()
    config.update(features=self.features)
    return config
