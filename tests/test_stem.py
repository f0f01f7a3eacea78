"""STEM-Net's defining property (shared/design/STEM.md): All Forward, Task-specific Backward.

For task t's loss alone, the gradient into every other task's embedding slice,
experts, gate and tower is exactly zero, while task t's slice and the shared
table get non-zero gradients. The same check run on a copy of the layer
without `tf.stop_gradient` must find violations, or the test proves nothing.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.layers import STEMLayer
from stem_tfrs.models import MEMMoE, STEMNet
from stem_tfrs.data.schema import CategoricalFeature, Schema

from tests.support import tiny_model_config

TASKS = ["finish", "like", "follow"]


def make_schema(directory) -> Schema:
  vocab = directory / "vocab"
  vocab.mkdir(exist_ok=True)
  features = []
  for name, size in (("uid", 20), ("item_id", 30), ("channel", 3)):
    (vocab / f"{name}.txt").write_text("".join(f"{name}{i}\n" for i in range(size)))
    features.append(CategoricalFeature(name, vocabulary_file=f"vocab/{name}.txt",
                                       vocabulary_size=size))
  return Schema(features=features, labels=TASKS, group_column="uid", directory=str(directory))


def make_batch(schema, n=64, seed=0):
  rng = np.random.default_rng(seed)
  features = {f.name: tf.constant([f"{f.name}{i}" for i in rng.integers(0, 40, n)])
              for f in schema.features}  # ids >= vocabulary size are unseen (OOV)
  labels = {t: tf.constant(rng.integers(0, 2, n).astype("float32")) for t in TASKS}
  return features, labels


def owner(variable_name: str) -> str:
  """'fused', 'shared' or the task a variable belongs to, from its name alone."""
  if re.search(r"/fused:", variable_name):
    return "fused"
  owners = [t for t in TASKS + ["shared"] if re.search(rf"(_|/){t}/", variable_name)]
  assert len(owners) == 1, f"variable {variable_name} names no single owner: {owners}"
  return owners[0]


def task_gradients(model, features, labels, task):
  """Gradients of task `task`'s BCE loss alone (no regularization) per variable."""
  with tf.GradientTape() as tape:
    logits = model.compute_logits(features, training=True)
    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels[task], logits[task]))
  grads = tape.gradient(loss, model.trainable_variables)
  return {v.name: (tf.convert_to_tensor(g).numpy() if g is not None else np.zeros(v.shape))
          for v, g in zip(model.trainable_variables, grads)}


def aftb_violations(model, features, labels, embedding_dim):
  """Every way in which `model` breaks the AFTB property; [] if it holds."""
  violations = []
  tables = TASKS + ["shared"]
  for t, task in enumerate(TASKS):
    for name, grad in task_gradients(model, features, labels, task).items():
      kind = owner(name)
      if kind == "fused":
        by_table = grad.reshape(grad.shape[0], len(tables), embedding_dim)
        for k, table in enumerate(tables):
          norm = np.abs(by_table[:, k, :]).sum()
          if table in (task, "shared") and norm == 0:
            violations.append(f"{task} loss: no gradient into the {table} embedding slice")
          if table not in (task, "shared") and norm != 0:
            violations.append(f"{task} loss: gradient {norm:.3g} into {table} embedding slice")
      elif kind not in (task, "shared") and np.abs(grad).sum() != 0:
        violations.append(f"{task} loss: gradient into {name}")
      elif kind in (task, "shared") and "gate_shared" not in name and np.abs(grad).sum() == 0:
        violations.append(f"{task} loss: no gradient into its own {name}")
  return violations


@pytest.fixture()
def schema(tmp_path):
  return make_schema(tmp_path)


def test_task_loss_never_reaches_other_tasks_parameters(schema):
  tf.keras.utils.set_random_seed(0)
  config = tiny_model_config(num_shared_experts=2, num_specific_experts=2)
  model = STEMNet(schema, config).build_from_schema()
  features, labels = make_batch(schema)
  assert aftb_violations(model, features, labels, config.embedding_dim) == []


def test_aftb_check_fails_without_stop_gradient(schema):
  # ME-MMoE is STEM-Net built from STEMLayer(aftb=False): the same layer
  # without tf.stop_gradient.
  tf.keras.utils.set_random_seed(0)
  config = tiny_model_config(num_shared_experts=2, num_specific_experts=2)
  model = MEMMoE(schema, config, name="stem").build_from_schema()
  assert not any(layer.aftb for layer in model.stem_layers)
  features, labels = make_batch(schema)
  violations = aftb_violations(model, features, labels, config.embedding_dim)
  # Every task's loss now leaks into the two other tasks' experts and embedding slices.
  for task in TASKS:
    for other in set(TASKS) - {task}:
      assert f"{task} loss: gradient into stem/stem_layer_0/expert_{other}/kernel_0:0" in violations
      assert any(v.startswith(f"{task} loss: gradient") and f"{other} embedding slice" in v
                 for v in violations)


def test_aftb_holds_with_batch_norm_and_dropout(schema):
  tf.keras.utils.set_random_seed(1)
  config = tiny_model_config(batch_norm=True, net_dropout=0.2)
  model = STEMNet(schema, config).build_from_schema()
  features, labels = make_batch(schema, seed=1)
  assert aftb_violations(model, features, labels, config.embedding_dim) == []


def test_stacked_layers_block_other_tasks_towers_gates_and_last_experts(schema):
  # With two layers, layer 2's shared experts read layer 1's shared gate output
  # h_S, which mixes every layer-1 expert without stop_gradient (as in the
  # paper). So task t's loss reaches layer-1 experts of other tasks through
  # h_S, but never other tasks' towers, gates or last-layer experts.
  tf.keras.utils.set_random_seed(2)
  model = STEMNet(schema, tiny_model_config(num_layers=2)).build_from_schema()
  features, labels = make_batch(schema, seed=2)
  grads = task_gradients(model, features, labels, "finish")
  nonzero = {name for name, g in grads.items() if np.abs(g).sum() != 0}
  for other in ("like", "follow"):
    assert not {n for n in nonzero if f"tower_{other}/" in n}
    assert not {n for n in nonzero if f"gate_{other}/" in n}
    assert not {n for n in nonzero if f"stem_layer_1/expert_{other}/" in n}
    assert {n for n in nonzero if f"stem_layer_0/expert_{other}/" in n}
  assert {n for n in nonzero if "stem_layer_0/gate_shared/" in n}
  assert not [n for n in grads if "stem_layer_1/gate_shared" in n]  # last layer skips it


def test_every_variable_names_its_owner(schema):
  model = STEMNet(schema, tiny_model_config(num_layers=2, batch_norm=True)).build_from_schema()
  owners = {owner(v.name) for v in model.variables}  # owner() asserts one per name
  assert owners == set(TASKS) | {"shared", "fused"}


def test_stem_layer_output_shapes_and_gates_sum_to_one():
  layer = STEMLayer(["a", "b"], num_shared_experts=3, num_specific_experts=2,
                    expert_hidden_units=[8, 6], gate_hidden_units=[4])
  inputs = [tf.random.normal([5, 10]) for _ in range(3)]
  outputs, gates = layer(inputs, return_gates=True)
  assert [o.shape.as_list() for o in outputs] == [[5, 6]] * 3
  assert layer.num_candidates == 2 * 2 + 3
  assert layer.candidate_owners(1) == ["a", "a", "b", "b", "shared", "shared", "shared"]
  for g in gates:
    assert g.shape.as_list() == [5, 7]
    np.testing.assert_allclose(tf.reduce_sum(g, axis=1).numpy(), 1.0, rtol=1e-5)
  last = STEMLayer(["a", "b"], 3, 2, [8, 6], output_shared=False)
  assert len(last(inputs)) == 2


def test_stem_layer_config_round_trip():
  layer = STEMLayer(["a", "b"], num_shared_experts=3, num_specific_experts=2,
                    expert_hidden_units=[8], gate_hidden_units=[4], dropout=0.1,
                    batch_norm=True, output_shared=False, aftb=False, name="s")
  clone = STEMLayer.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_stem_layer_rejects_wrong_number_of_inputs():
  layer = STEMLayer(["a", "b"], 1, 1, [4])
  with pytest.raises(ValueError, match="takes 3 inputs"):
    layer([tf.zeros([2, 4])] * 2)
