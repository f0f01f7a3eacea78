"""stem_tfrs.optimizers: FusedAdam takes the same steps as Keras' Adam."""

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.optimizers import FusedAdam

# Row 49 is looked up in the first step only; rows 10-48 never.
_FIRST_IDS = [[1, 7, 7, 49], [0, 7, 49, 3], [5, 5, 5, 5]]
_LATER_IDS = [[1, 7, 7, 3], [0, 7, 2, 3], [5, 5, 5, 5]]


def _train(optimizer, steps=6):
  """Variables and slots after `steps` steps on a dense layer and an embedding table.

  The table's gradients are sparse, with repeated rows.
  """
  tf.keras.utils.set_random_seed(3)
  table = tf.Variable(tf.random.normal([50, 4]), name="table")
  kernel = tf.Variable(tf.random.normal([4, 3]), name="kernel")
  bias = tf.Variable(tf.zeros([3]), name="bias")
  targets = tf.random.normal([3, 4, 3])
  variables = [table, kernel, bias]

  @tf.function
  def step(ids):
    with tf.GradientTape() as tape:
      out = tf.tensordot(tf.nn.embedding_lookup(table, ids), kernel, 1) + bias
      loss = tf.reduce_mean(tf.square(out - targets))
    gradients = tape.gradient(loss, variables)
    assert isinstance(gradients[0], tf.IndexedSlices)
    optimizer.apply_gradients(zip(gradients, variables))

  for i in range(steps):
    if i == 3:  # as ReduceLROnPlateau does
      optimizer.learning_rate = optimizer.learning_rate * 0.5
    step(tf.constant(_FIRST_IDS if i == 0 else _LATER_IDS))
  slots = optimizer.variables[1:] if steps else []  # after the iteration count
  return [v.numpy() for v in variables + slots]


@pytest.mark.parametrize("kwargs", [{}, {"adaptive_epsilon": True, "epsilon": 1e-3},
                                    {"weight_decay": 0.1}, {"amsgrad": True}])
def test_fused_adam_takes_the_same_steps_as_keras_adam(kwargs):
  expected = _train(tf.keras.optimizers.Adam(0.05, **kwargs))
  got = _train(FusedAdam(0.05, **kwargs))
  slots = 3 if kwargs.get("amsgrad") else 2  # m, v (and v_hat) per variable
  assert len(got) == len(expected) == 3 + 3 * slots
  for a, b in zip(got, expected):
    # float32 round-off of a different operation order: 1-2 ulp of |w| < 4 a step.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  if "weight_decay" not in kwargs:  # (which shrinks every row)
    start = _train(FusedAdam(0.05, **kwargs), steps=0)[0]
    np.testing.assert_array_equal(got[0][10:49], start[10:49])  # never looked up
  after_first = _train(FusedAdam(0.05, **kwargs), steps=1)[0]
  # Row 49 keeps moving on its momentum after its only lookup, as in Keras' Adam.
  assert np.abs(got[0][49] - after_first[49]).min() > 1e-3


def test_fused_adam_round_trips_its_config():
  optimizer = FusedAdam(0.01, beta_2=0.99)
  again = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(optimizer))
  assert isinstance(again, FusedAdam)
  assert again.get_config() == optimizer.get_config()
