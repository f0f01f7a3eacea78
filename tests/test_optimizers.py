"""stem_tfrs.training.optimizers: FusedAdam takes the same steps as Keras' Adam; LazyAdam only the
looked-up rows' steps; both clip the global norm of the gradient, a sparse one's rows summed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.training.optimizers import FusedAdam, LazyAdam

from tests.support import REPO
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


@pytest.mark.parametrize("kwargs", [{}, {"adaptive_epsilon": True, "epsilon": 1e-3},
                                    {"amsgrad": True}])
def test_lazy_adam_moves_only_the_rows_a_batch_looks_up(kwargs):
  adam = _train(FusedAdam(0.05, **kwargs))
  lazy = _train(LazyAdam(0.05, **kwargs))
  slots = 3 if kwargs.get("amsgrad") else 2
  assert len(lazy) == len(adam) == 3 + 3 * slots
  # Every dense variable, and every table row except 49, took Adam's steps: rows 0, 1, 3, 5
  # and 7 are looked up in every step, row 2 from the second one (Adam's first step of a
  # row it has no gradient for is zero), and rows 10-48 never.
  rows = np.r_[0:49]
  for a, b in zip(lazy, adam):
    a, b = (a[rows], b[rows]) if a.shape[0] == 50 else (a, b)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  # Row 49, looked up in the first step only, rests after it, with its moments; Adam's moves.
  after_first = _train(LazyAdam(0.05, **kwargs), steps=1)
  tables = [i for i, a in enumerate(lazy) if a.shape == (50, 4)]  # the table and its slots
  assert len(tables) == 1 + slots
  for i in tables:
    np.testing.assert_array_equal(lazy[i][49], after_first[i][49])
  assert np.abs(adam[0][49] - lazy[0][49]).min() > 1e-3


def test_lazy_adam_ignores_rows_outside_the_batch_of_a_big_table():
  table = tf.Variable(tf.ones([100_000, 8]))
  optimizer = LazyAdam(0.1)
  ids = tf.constant([3, 99_999, 3])
  for _ in range(2):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.gather(table, ids))
    optimizer.apply_gradients([(tape.gradient(loss, table), table)])
  moved = np.flatnonzero(np.any(table.numpy() != 1.0, axis=1))
  np.testing.assert_array_equal(moved, [3, 99_999])
  # Adam's first steps are lr * sign(g): two steps of 0.1 downhill.
  np.testing.assert_allclose(table.numpy()[[3, 99_999]], 0.8, atol=1e-6)


@pytest.mark.parametrize("cls", [FusedAdam, LazyAdam])
def test_optimizers_round_trip_their_config(cls):
  optimizer = cls(0.01, beta_2=0.99)
  again = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(optimizer))
  assert type(again) is cls
  assert again.get_config() == optimizer.get_config()


_MIRRORED = """
import json, sys
import numpy as np
import stem_tfrs
import tensorflow as tf

[cpu] = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
halves = [[1, 7, 7, 3], [7, 2, 2, 9]]  # rows 7 and 2 repeat, row 7 on both replicas
optimizer_class, kwargs, loss_scale = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])


def train(strategy, replica_ids):
  with strategy.scope():
    table = tf.Variable(tf.reshape(tf.range(40.0), [10, 4]) / 40)
    optimizer = getattr(stem_tfrs, optimizer_class)(0.05, **kwargs)

  def replica_step(ids):
    with tf.GradientTape() as tape:
      # Each lookup weighs by its id: the replicas' losses differ in scale, and clipping each
      # replica's gradient would weigh them otherwise than clipping their sum.
      weight = tf.cast(ids + 1, tf.float32)[:, None]
      loss = loss_scale * tf.reduce_sum(weight * tf.square(tf.gather(table, ids) - 1.0))
    optimizer.apply_gradients([(tape.gradient(loss, table), table)])

  @tf.function
  def step():
    strategy.run(replica_step, args=(replica_ids(),))

  for _ in range(3):
    step()
  return table.numpy()


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
ids = mirrored.experimental_distribute_values_from_function(
    lambda context: tf.constant(halves[context.replica_id_in_sync_group]))
one = train(tf.distribute.get_strategy(), lambda: tf.constant(halves[0] + halves[1]))
json.dump({"replicas": mirrored.num_replicas_in_sync, "mirrored": train(mirrored, lambda: ids).tolist(),
           "one_device": one.tolist()}, sys.stdout)
"""


@pytest.mark.parametrize("cls, kwargs, loss_scale", [
    ("LazyAdam", {}, 1.0),
    # Clipped after the replicas' gradients are summed: the global norm of the step's gradient.
    pytest.param("LazyAdam", {"global_clipnorm": 1.0}, 1e3, marks=pytest.mark.slow),
    pytest.param("FusedAdam", {"global_clipnorm": 1.0}, 1e3, marks=pytest.mark.slow),
])
@pytest.mark.slow
def test_optimizers_under_a_mirrored_strategy_take_the_one_device_steps(tmp_path, cls, kwargs,
                                                                        loss_scale):
  # Two replicas' sparse gradients, with rows in common, sum into one update per row.
  script = tmp_path / "mirrored.py"
  script.write_text(_MIRRORED)
  result = subprocess.run([sys.executable, str(script), cls, json.dumps(kwargs),
                           str(loss_scale)], capture_output=True, text=True,
                          cwd=REPO, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["replicas"] == 2
  mirrored, one = np.array(report["mirrored"]), np.array(report["one_device"])
  np.testing.assert_allclose(mirrored, one, rtol=0, atol=1e-6)
  start = np.arange(40, dtype=np.float32).reshape(10, 4) / np.float32(40)
  moved = np.flatnonzero(np.any(mirrored != start, axis=1))
  if cls == "LazyAdam":
    np.testing.assert_array_equal(moved, [1, 2, 3, 7, 9])


class _Recording:
  """An optimizer class's subclass that keeps the gradients its update steps receive."""

  def __init__(self, cls, **kwargs):
    applied = self.applied = {}

    class Recording(cls):
      def update_step(self, gradient, variable):
        applied[variable.name] = tf.convert_to_tensor(gradient)  # sparse rows summed, as dense
        return super().update_step(gradient, variable)

    self.optimizer = Recording(1e-3, **kwargs)


def _huge_gradients(recording, mixed=False):
  """One step on an embedding table looked up with repeated ids and a dense layer, of a loss
  scaled up: (the raw gradients, as dense tensors, by variable name; the applied ones)."""
  tf.keras.utils.set_random_seed(4)
  table = tf.Variable(tf.random.normal([20, 4]), name="table")
  kernel = tf.Variable(tf.random.normal([4, 2]), name="kernel")
  variables = [table, kernel]
  ids = tf.constant([5, 5, 5, 5, 5, 5, 2, 9])  # row 5's lookups push the same way
  with tf.GradientTape() as tape:
    rows = tf.gather(table, ids)
    if mixed:  # bfloat16 compute of float32 variables, as Keras' mixed_bfloat16 policy runs it
      out = tf.cast(tf.matmul(tf.cast(rows, tf.bfloat16), tf.cast(kernel, tf.bfloat16)),
                    tf.float32)
    else:
      out = tf.matmul(rows, kernel)
    loss = 1e4 * tf.reduce_sum(tf.square(out - 3.0))
  gradients = tape.gradient(loss, variables)
  assert isinstance(gradients[0], tf.IndexedSlices)
  recording.optimizer.apply_gradients(zip(gradients, variables))
  raw = {v.name: tf.convert_to_tensor(g) for g, v in zip(gradients, variables)}
  return raw, recording.applied


def _global_norm(gradients):
  return float(tf.linalg.global_norm(list(gradients.values())))


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("cls", [FusedAdam, LazyAdam])
def test_global_clipping_bounds_the_norm_of_the_gradients_applied(cls, mixed):
  raw, applied = _huge_gradients(_Recording(cls, global_clipnorm=10.0), mixed)
  assert _global_norm(raw) > 1e4
  assert sorted(applied) == sorted(raw)
  # The whole step's gradient, the embedding table's repeated rows summed, is scaled down
  # to norm 10: its direction is kept, every variable by the same factor.
  np.testing.assert_allclose(_global_norm(applied), 10.0, rtol=1e-5)
  scale = 10.0 / _global_norm(raw)
  for name, gradient in raw.items():
    np.testing.assert_allclose(applied[name], gradient.numpy() * scale, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("cls", [FusedAdam, LazyAdam])
def test_without_clipping_the_gradients_are_applied_as_they_are(cls):
  raw, applied = _huge_gradients(_Recording(cls))
  assert _global_norm(applied) > 1e4
  for name, gradient in raw.items():
    np.testing.assert_array_equal(applied[name], gradient)
