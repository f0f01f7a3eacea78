"""Multi-layer perceptrons: one MLP, and a group of same-shaped experts as one batched MLP."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from stem_tfrs.layers.initializers import fresh


def _hidden_block_config(units, dropout, batch_norm):
  units = [int(u) for u in units]
  if any(u < 1 for u in units):
    raise ValueError(f"hidden units must be positive, got {units}")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"dropout must be in [0, 1), got {dropout}")
  return units, float(dropout), bool(batch_norm)


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class MLP(tf.keras.layers.Layer):
  """Dense -> [BatchNorm] -> ReLU -> [Dropout] per hidden width, then an optional linear output.

  Example:

      tower = MLP([128, 64], output_units=1, name="tower_like")
      logits = tower(x)            # [B, 1]

  Args:
    hidden_units: Widths of the hidden layers (may be empty).
    output_units: If set, a final linear Dense of this width (no activation).
    dropout: Dropout rate after each hidden activation.
    batch_norm: Batch normalization before each hidden activation.
    kernel_initializer: Initializer of every Dense kernel (each gets its own
      copy); biases start at zero.

  Input shape: [B, d_in]. Output shape: [B, output_units or hidden_units[-1]].
  """

  def __init__(self, hidden_units: Sequence[int], output_units: Optional[int] = None,
               dropout: float = 0.0, batch_norm: bool = False,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.hidden_units, self.dropout, self.batch_norm = _hidden_block_config(
        hidden_units, dropout, batch_norm)
    if output_units is not None and output_units < 1:
      raise ValueError(f"output_units must be >= 1, got {output_units}")
    if output_units is None and not self.hidden_units:
      raise ValueError("an MLP needs hidden_units or output_units")
    self.output_units = output_units

  def build(self, input_shape):
    self._blocks = []
    for i, units in enumerate(self.hidden_units):
      block = [tf.keras.layers.Dense(units, use_bias=not self.batch_norm,
                                     kernel_initializer=fresh(self.kernel_initializer),
                                     name=f"dense_{i}")]
      if self.batch_norm:
        block.append(tf.keras.layers.BatchNormalization(name=f"batch_norm_{i}"))
      block.append(tf.keras.layers.ReLU())
      if self.dropout:
        block.append(tf.keras.layers.Dropout(self.dropout))
      self._blocks.extend(block)
    if self.output_units is not None:
      self._blocks.append(tf.keras.layers.Dense(
          self.output_units, kernel_initializer=fresh(self.kernel_initializer), name="output"))
    super().build(input_shape)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    x = inputs
    for layer in self._blocks:
      x = layer(x, training=training)
    return x

  def get_config(self):
    config = super().get_config()
    config.update(hidden_units=self.hidden_units, output_units=self.output_units,
                  dropout=self.dropout, batch_norm=self.batch_norm,
                  kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer))
    return config


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class ExpertGroup(tf.keras.layers.Layer):
  """K independent expert MLPs of the same shape that read the same input.

  The K experts' weights are stacked: layer l has one [K, in, out] kernel
  and one [K, out] bias, and expert k's are their k-th slices (taken
  without a copy). Every layer is one matrix product per expert with its
  bias and ReLU fused in:

      y_0^k = relu(x @ W_0^k + b_0^k)                         K x [B, H_0]
      y_l^k = relu(y_{l-1}^k @ W_l^k + b_l^k)                 K x [B, H_l]

  Per-expert products on stacked kernels were kept over the alternatives,
  each slower in `benchmarks/train_throughput.py` or `benchmarks/serving.py`:
  one wide first-layer product x @ [W_0^1 | ... | W_0^K] with its output split
  into the experts' blocks (the split copies [B, K * H_0] forward and
  concatenates it backward); a side-by-side [in, K * H_0] kernel split per
  call (a copy of the kernel on every call, which batch-1 serving feels); one
  batched product per layer, [K, B, H] x [K, H, H'] (its bias add and ReLU,
  and their gradients, become separate passes over [K, B, H']); and
  `einsum("bki,kio->bko")`.

  Each expert's kernels are initialized as `kernel_initializer` would
  initialize a Dense layer of that expert's shape (Glorot uniform by
  default), and its biases at zero. With `batch_norm`, every expert keeps its
  own statistics.

  Args:
    num_experts: K.
    hidden_units: Expert widths; the output width is `hidden_units[-1]`.
    dropout: Dropout rate after each hidden activation.
    batch_norm: Batch normalization before each hidden activation.
    kernel_initializer: Initializer of one expert's kernel, as for a Dense
      layer. A `VarianceScaling` one (Glorot and Xavier included) gets its
      scale multiplied by K: the stacked [K, in, out] kernel's fans are K
      times an expert's. Others are used as they are.

  Input shape: [B, d_in]. Output shape: [B, K, hidden_units[-1]], or with
  `call(..., stacked=False)` a list of K [B, hidden_units[-1]] tensors (what
  the gated layers mix: stacking them would copy every output once more).
  """

  def __init__(self, num_experts: int, hidden_units: Sequence[int],
               dropout: float = 0.0, batch_norm: bool = False,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    if num_experts < 1:
      raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    self.num_experts = int(num_experts)
    self.hidden_units, self.dropout, self.batch_norm = _hidden_block_config(
        hidden_units, dropout, batch_norm)
    if not self.hidden_units:
      raise ValueError("an expert needs at least one hidden width")

  def build(self, input_shape):
    k = self.num_experts
    fan_in = int(input_shape[-1])
    self.kernels, self.biases, self.norms = [], [], []
    for i, units in enumerate(self.hidden_units):
      self.kernels.append(self.add_weight(
          name=f"kernel_{i}", shape=[k, fan_in, units], initializer=self._expert_initializer()))
      if self.batch_norm:
        # Statistics per expert and unit: each layer normalizes [B, K, H_i].
        self.norms.append(tf.keras.layers.BatchNormalization(
            axis=[1, 2], name=f"batch_norm_{i}"))
      else:
        self.biases.append(self.add_weight(
            name=f"bias_{i}", shape=[k, units], initializer="zeros"))
      fan_in = units
    self._dropout = tf.keras.layers.Dropout(self.dropout) if self.dropout else None
    super().build(input_shape)

  def _expert_initializer(self) -> tf.keras.initializers.Initializer:
    """A new instance (one per weight: an unseeded instance repeats its values) of the
    kernel initializer, for the stacked [K, in, out] kernel."""
    initializer = fresh(self.kernel_initializer)
    if not isinstance(initializer, tf.keras.initializers.VarianceScaling):
      return initializer
    # Fans over [K, in, out] are K times an expert's; a K times larger scale restores them.
    return tf.keras.initializers.VarianceScaling(
        scale=initializer.scale * self.num_experts, mode=initializer.mode,
        distribution=initializer.distribution, seed=initializer.seed)

  def call(self, inputs: tf.Tensor, training: Optional[bool] = None, stacked: bool = True):
    experts = [inputs] * self.num_experts
    for i in range(len(self.hidden_units)):
      experts = [tf.matmul(x, kernel)                                      # K x [B, H_i]
                 for x, kernel in zip(experts, tf.unstack(self.kernels[i]))]
      if self.batch_norm:
        experts = tf.unstack(self.norms[i](tf.stack(experts, axis=1), training=training),
                             axis=1)
      else:  # each a fused MatMul + BiasAdd + Relu
        experts = [tf.nn.bias_add(x, bias) for x, bias in zip(experts, tf.unstack(self.biases[i]))]
      experts = [self._relu_dropout(x, training) for x in experts]
    return tf.stack(experts, axis=1) if stacked else experts    # [B, K, H] or K x [B, H]

  def _relu_dropout(self, x: tf.Tensor, training: Optional[bool]) -> tf.Tensor:
    x = tf.nn.relu(x)
    return self._dropout(x, training=training) if self._dropout is not None else x

  def get_config(self):
    config = super().get_config()
    config.update(num_experts=self.num_experts, hidden_units=self.hidden_units,
                  dropout=self.dropout, batch_norm=self.batch_norm,
                  kernel_initializer=tf.keras.initializers.serialize(self.kernel_initializer))
    return config
