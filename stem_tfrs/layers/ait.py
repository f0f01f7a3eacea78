"""The adaptive information transfer (AIT) attention of AITM."""

from __future__ import annotations

import math

import tensorflow as tf

from stem_tfrs.layers.initializers import fresh


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class AITAttention(tf.keras.layers.Layer):
  """Self-attention over two vectors: the transferred p and the task's own q.

  From Xi et al., "Modeling the Sequential Dependence among Audience Multi-step
  Conversions with Multi-task Learning in Targeted Display Advertising" (KDD
  2021). With u in {p, q} and learned projections h1 (values), h2 (keys),
  h3 (queries) of width H:

      w_u = softmax_u(<h2(u), h3(u)> / sqrt(H))
      z   = sum_u w_u * h1(u)

  Args:
    units: H, the projection width.
    kernel_initializer: Initializer of each projection's kernel (each gets its
      own copy).

  Input: (p, q), each [B, d]. Output: z [B, H].
  """

  def __init__(self, units: int, kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if units < 1:
      raise ValueError(f"units must be >= 1, got {units}")
    self.units = int(units)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

  def build(self, input_shape):
    dense = lambda name: tf.keras.layers.Dense(
        self.units, use_bias=False, kernel_initializer=fresh(self.kernel_initializer), name=name)
    self.values, self.keys, self.queries = dense("values"), dense("keys"), dense("queries")
    super().build(input_shape)

  def call(self, inputs) -> tf.Tensor:
    p, q = inputs
    x = tf.stack([p, q], axis=1)                                   # [B, 2, d]
    scores = tf.reduce_sum(self.keys(x) * self.queries(x), axis=-1) / math.sqrt(self.units)
    weights = tf.nn.softmax(scores, axis=1)                        # [B, 2]
    return tf.einsum("bu,buh->bh", weights, self.values(x))

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units,
                  kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer))
    return config
