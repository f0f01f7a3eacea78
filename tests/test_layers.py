"""Embedding and MLP layers: shapes, the fused layout, OOV rows, batched experts, configs."""

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.layers import MLP, ExpertGroup, FieldEmbedding
from stem_tfrs.layers.gated_experts import gate_softmax


@pytest.fixture()
def vocab_features(tmp_path):
  (tmp_path / "a.txt").write_text("a0\na1\na2\n")
  (tmp_path / "b.txt").write_text("b0\nb1\n")
  return [{"name": "a", "dtype": "string", "vocabulary_file": str(tmp_path / "a.txt"),
           "vocabulary_size": 3},
          {"name": "b", "dtype": "string", "vocabulary_file": str(tmp_path / "b.txt"),
           "vocabulary_size": 2},
          {"name": "c", "dtype": "string", "hash_buckets": 5}]


def test_field_embedding_shapes_and_fused_column_layout(vocab_features):
  layer = FieldEmbedding(vocab_features, ["t1", "t2", "shared"], embedding_dim=4)
  outputs = layer({"a": tf.constant(["a1", "a2"]), "b": tf.constant(["b0", "b1"]),
                   "c": tf.constant(["x", "y"])})
  assert [o.shape.as_list() for o in outputs] == [[2, 12]] * 3
  assert layer.table.name.endswith("fused:0")
  assert layer.table.shape.as_list() == [4 + 3 + 5, 12]
  table = layer.table.numpy()
  # Row of a1 is 2 (OOV is 0); field b starts at row 4; table k is columns [4k, 4k+4).
  for k, out in enumerate(outputs):
    np.testing.assert_array_equal(out.numpy()[0, :4], table[2, 4 * k:4 * k + 4])
    np.testing.assert_array_equal(out.numpy()[0, 4:8], table[4 + 1, 4 * k:4 * k + 4])


def test_unseen_ids_map_to_their_fields_oov_row(vocab_features):
  layer = FieldEmbedding(vocab_features[:2], ["shared"], embedding_dim=3)
  out = layer({"a": tf.constant(["never-seen", ""]), "b": tf.constant(["b9", "b9"])})[0]
  table = layer.table.numpy()
  assert layer.table.name.endswith("shared:0")
  np.testing.assert_array_equal(out.numpy()[:, :3], table[[0, 0]])
  np.testing.assert_array_equal(out.numpy()[:, 3:], table[[4, 4]])


def test_embedding_l2_penalizes_gathered_rows_per_example(vocab_features):
  layer = FieldEmbedding(vocab_features[:1], ["t", "shared"], embedding_dim=2,
                         embedding_l2=0.5)
  ids = tf.constant(["a0", "a0", "a1"])
  layer({"a": ids})
  rows = layer.table.numpy()[[1, 1, 2]]
  assert float(sum(layer.losses)) == pytest.approx(0.5 * np.square(rows).sum() / 3, rel=1e-5)


def test_int64_ids_use_an_integer_lookup(tmp_path):
  (tmp_path / "v.txt").write_text("10\n20\n")
  layer = FieldEmbedding([{"name": "x", "dtype": "int64",
                           "vocabulary_file": str(tmp_path / "v.txt"), "vocabulary_size": 2}],
                         ["shared"], embedding_dim=2)
  out = layer({"x": tf.constant([20, 99], tf.int64)})[0].numpy()
  np.testing.assert_array_equal(out, layer.table.numpy()[[2, 0]])


def test_expert_group_equals_independent_dense_experts():
  tf.keras.utils.set_random_seed(0)
  group = ExpertGroup(3, [5, 4])
  x = tf.random.normal([6, 7])
  y = group(x).numpy()
  assert y.shape == (6, 3, 4)
  assert group.kernels[0].shape == (3, 7, 5) and group.biases[0].shape == (3, 5)
  for k in range(3):
    h = tf.nn.relu(x @ group.kernels[0][k] + group.biases[0][k])
    h = tf.nn.relu(h @ group.kernels[1][k] + group.biases[1][k])
    np.testing.assert_allclose(y[:, k], h.numpy(), rtol=1e-5, atol=1e-6)


def test_expert_group_with_batch_norm_normalizes_each_expert_and_unit():
  tf.keras.utils.set_random_seed(0)
  group = ExpertGroup(3, [5, 4, 4], batch_norm=True)
  x = tf.random.normal([16, 7])
  y = group(x, training=True).numpy()
  assert y.shape == (16, 3, 4)

  def normalize(h, norm, k):  # over the batch, with expert k's scale and offset ([1, K, H])
    mean, variance = tf.nn.moments(h, axes=[0])
    return tf.nn.batch_normalization(h, mean, variance, norm.beta[0, k], norm.gamma[0, k],
                                     norm.epsilon)

  for k in range(3):
    h = tf.nn.relu(normalize(x @ group.kernels[0][k], group.norms[0], k))
    for i in (1, 2):
      h = tf.nn.relu(normalize(h @ group.kernels[i][k], group.norms[i], k))
    np.testing.assert_allclose(y[:, k], h.numpy(), rtol=1e-4, atol=1e-5)


def test_expert_group_initializes_each_expert_like_a_dense_layer():
  tf.keras.utils.set_random_seed(0)
  group = ExpertGroup(8, [256, 256, 256])
  group(tf.zeros([1, 128]))
  limit_first, limit_square = np.sqrt(6 / (128 + 256)), np.sqrt(6 / (256 + 256))
  k0, k1, k2 = (k.numpy() for k in group.kernels)
  assert np.abs(k0).max() <= limit_first and np.abs(k0).max() > 0.95 * limit_first
  assert np.abs(k1).max() <= limit_square and np.abs(k1).max() > 0.95 * limit_square
  assert not np.array_equal(k1, k2)  # same shape, different draws
  assert not np.array_equal(k0[0], k0[1])  # each expert its own draw


def test_mlp_output_shape_and_config_round_trip():
  mlp = MLP([8, 4], output_units=1, dropout=0.1, batch_norm=True, name="tower_x")
  assert mlp(tf.zeros([3, 5]), training=True).shape.as_list() == [3, 1]
  clone = MLP.from_config(mlp.get_config())
  assert clone.get_config() == mlp.get_config()
  assert MLP([6])(tf.zeros([2, 3])).shape.as_list() == [2, 6]


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_units": [0]}, "positive"),
    ({"hidden_units": [4], "dropout": 1.0}, "dropout"),
    ({"hidden_units": []}, "hidden_units or output_units"),
])
def test_mlp_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    MLP(**kwargs)


def test_layer_configs_round_trip(vocab_features):
  layer = FieldEmbedding(vocab_features, ["t", "shared"], embedding_dim=4, embedding_l2=1e-6)
  assert FieldEmbedding.from_config(layer.get_config()).get_config() == layer.get_config()
  group = ExpertGroup(2, [3], dropout=0.2, batch_norm=True)
  assert ExpertGroup.from_config(group.get_config()).get_config() == group.get_config()


def test_multivalent_field_is_the_mean_of_its_values_padding_excluded(vocab_features):
  features = [vocab_features[0], dict(vocab_features[1], multivalent=True), vocab_features[2]]
  layer = FieldEmbedding(features, ["t", "shared"], embedding_dim=2, embedding_l2=0.1)
  out = layer({"a": tf.constant(["a1", "a2"]),
               "b": tf.constant([["b0", "b1", ""], ["", "", ""]]),
               "c": tf.constant(["x", "y"])})[0].numpy()
  table = layer.table.numpy()
  np.testing.assert_allclose(out[0, 2:4], (table[5, :2] + table[6, :2]) / 2, rtol=1e-6)
  np.testing.assert_array_equal(out[1, 2:4], [0.0, 0.0])  # an empty list
  np.testing.assert_array_equal(out[:, :2], table[[2, 3], :2])  # field a stays first
  rows = np.concatenate([table[[2, 3]], table[[5, 6]],
                         layer.table.numpy()[[7 + int(layer._lookups[2](tf.constant(v)))
                                              for v in ("x", "y")]]])
  assert float(sum(layer.losses)) == pytest.approx(0.1 * np.square(rows).sum() / 2, rel=1e-5)


def test_gate_softmax_is_the_softmax_in_every_precision():
  logits = tf.constant([[0.0, 1.0, -2.0, 3.0], [1000.0, 999.0, -1000.0, 1000.0]])
  expected = tf.nn.softmax(logits).numpy()
  weights = gate_softmax(logits)
  assert weights.dtype == tf.float32
  np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6, atol=1e-7)  # no overflow
  # half precision: computed in float32, rounded once (bfloat16 keeps 8 bits, float16 11)
  for dtype, rounding in ((tf.bfloat16, 2.0**-8), (tf.float16, 2.0**-11)):
    weights = gate_softmax(tf.cast(logits[:1], dtype))
    assert weights.dtype == dtype
    rounded = tf.cast(tf.cast(expected[:1], dtype), tf.float32).numpy()
    np.testing.assert_allclose(tf.cast(weights, tf.float32).numpy(), rounded, rtol=rounding)
  scale = tf.constant([[1.0, 2.0, 3.0, 4.0]])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(logits)
    ours = gate_softmax(logits) * scale
    theirs = tf.nn.softmax(logits) * scale
  np.testing.assert_allclose(tape.gradient(ours, logits), tape.gradient(theirs, logits),
                             atol=1e-6)
