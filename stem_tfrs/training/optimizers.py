"""Adam whose update of each variable is one fused kernel, and its lazy variant."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class FusedAdam(tf.keras.optimizers.Adam):
  """`tf.keras.optimizers.Adam` with each variable's update as one `ApplyAdam` kernel.

  The same algorithm, hyper-parameters, slots and checkpoints as Keras' Adam:

      alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
      m += (g - m) * (1 - beta_1)
      v += (g^2 - v) * (1 - beta_2)
      w -= alpha * m / (sqrt(v) + epsilon)

  Keras runs this on a CPU as ~10 element-wise ops per variable, each a pass
  over the variable, and for a sparse gradient (an embedding table's
  `IndexedSlices`) still updates every row of the table that way. Here a
  dense gradient goes to one `ResourceApplyAdam` kernel, and a sparse one
  (whose repeated rows Keras has already summed) is scattered into a dense
  tensor first: rows absent from the batch get g = 0, which is what Keras'
  sparse update does to them too. The results agree with Keras' Adam to
  float32 round-off; the fused update is the faster one on a CPU, by the
  measurements of `benchmarks/optimizer.py`.

  `amsgrad` falls back to Keras' own update. Weight decay, learning-rate
  schedules and distribution strategies are Keras' own code, unchanged.
  Clipping (`clipnorm`, `global_clipnorm`, `clipvalue`) is Keras' too, of a
  sparse gradient whose repeated rows are summed first (`_clip_gradients`).
  """

  def _clip_gradients(self, grads):
    """Keras' clipping, of the gradients as the update sees them.

    Keras clips a step's gradients before it sums the repeated rows of a
    sparse one (an embedding table's `IndexedSlices`: one row per lookup),
    and takes the norm of those unsummed rows, which is not the gradient's:
    n lookups of one row pushing the same way count sqrt(n) times less than
    the row's gradient. Summed first, the global norm clipped is that of the
    whole gradient, as PyTorch's `clip_grad_norm_` takes it. Keras' second
    summation then finds every row once and changes nothing. Under a
    distribution strategy this runs after the replicas' gradients are
    summed, so the norm is the global step's.
    """
    if self.clipnorm or self.global_clipnorm or self.clipvalue:
      grads = self._deduplicate_sparse_grad(grads)
    return super()._clip_gradients(grads)

  def _coefficients(self, dtype):
    """(lr, beta_1, beta_2, beta_1^t, beta_2^t, epsilon) of this step, in `dtype`."""
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    beta_2_power = tf.pow(beta_2, step)
    epsilon = tf.cast(self.epsilon, dtype)
    if self.adaptive_epsilon:
      epsilon *= tf.sqrt(1 - beta_2_power)
    return (tf.cast(self.learning_rate, dtype), beta_1, beta_2, tf.pow(beta_1, step),
            beta_2_power, epsilon)

  def update_step(self, gradient, variable):
    if self.amsgrad:
      return super().update_step(gradient, variable)
    lr, beta_1, beta_2, beta_1_power, beta_2_power, epsilon = self._coefficients(variable.dtype)
    if isinstance(gradient, tf.IndexedSlices):  # rows -> the whole table, zeros elsewhere
      gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices,
                                              tf.shape(variable)[0])
    index = self._index_dict[self._var_key(variable)]
    return tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle, beta1_power=beta_1_power,
        beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
        grad=gradient, use_locking=False)


@tf.keras.utils.register_keras_serializable(package="stem_tfrs")
class LazyAdam(FusedAdam):
  """Adam that updates only the rows of an embedding table the batch looked up.

  A sparse gradient (`IndexedSlices`, from the model's gather) updates the
  moments and weights of its own rows only, with Adam's formula and the
  global step t:

      m[rows] += (g - m[rows]) * (1 - beta_1)
      v[rows] += (g^2 - v[rows]) * (1 - beta_2)
      w[rows] -= alpha * m[rows] / (sqrt(v[rows]) + epsilon)

  so a step costs what its batch looks up, not what the table holds
  (`benchmarks/optimizer.py` times both on a large table). Adam, as
  `FusedAdam`, Keras and PyTorch run it, decays the moments of every row
  every step, and a row keeps moving on its momentum after the batches stop
  looking it up; here it rests until it is looked up again. This is the "lazy" Adam of TF1's `LazyAdamOptimizer`
  and TF Addons, and the usual choice for tables of millions of ids. A row
  looked up in every step takes exactly Adam's steps, and dense gradients
  (every other variable) take `FusedAdam`'s. Keras sums a sparse gradient's
  repeated rows before the update, which the scatters rely on. With
  `amsgrad`, the running maximum of v is kept per row the same way. Weight
  decay is Keras' own step, over the whole table.
  """

  def update_step(self, gradient, variable):
    if not isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable)
    lr, beta_1, beta_2, beta_1_power, beta_2_power, epsilon = self._coefficients(variable.dtype)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    index = self._index_dict[self._var_key(variable)]
    m, v = self._momentums[index], self._velocities[index]
    rows, g = gradient.indices, gradient.values
    m_rows = tf.gather(m, rows)
    m_rows += (g - m_rows) * (1 - beta_1)                                   # [N, width]
    v_rows = tf.gather(v, rows)
    v_rows += (tf.square(g) - v_rows) * (1 - beta_2)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    if self.amsgrad:
      v_hat = self._velocity_hats[index]
      v_rows = tf.maximum(tf.gather(v_hat, rows), v_rows)
      v_hat.scatter_update(tf.IndexedSlices(v_rows, rows))
    return variable.scatter_sub(
        tf.IndexedSlices(m_rows * alpha / (tf.sqrt(v_rows) + epsilon), rows))
