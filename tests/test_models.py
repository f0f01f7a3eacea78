"""Every registered architecture trains and serves; each one's defining behaviour is pinned."""

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import build_model, export_saved_model, make_dataset
from stem_tfrs.models import MODEL_NAMES, MODELS, MultiTaskRankingModel
from stem_tfrs.data.schema import Schema

from tests.support import tiny_model_config
from tests.test_stem import TASKS, make_batch, make_schema, task_gradients


@pytest.fixture()
def schema(tmp_path):
  return make_schema(tmp_path)


def nonzero(grads, pattern):
  return {n for n, g in grads.items() if pattern in n and np.abs(g).sum() != 0}


def present(grads, pattern):
  return {n for n in grads if pattern in n}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_lowers_the_loss_and_the_export_serves(name, tiny_data, tmp_path):
  tf.keras.utils.set_random_seed(0)
  schema = Schema.load(tiny_data)
  model = build_model(name, schema, tiny_model_config(num_layers=2))
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
  batch = next(iter(make_dataset(schema, "train", 512)))
  before = float(model.compute_loss(batch))
  model.fit(tf.data.Dataset.from_tensors(batch).repeat(20), verbose=0)
  assert float(model.compute_loss(batch)) < 0.9 * before

  path = export_saved_model(model, schema, str(tmp_path), name, warmup_batches=[])
  serve = tf.saved_model.load(path).signatures["serving_default"]
  features = {k: tf.concat([v[:3], tf.constant(["never-seen"])], 0) for k, v in batch[0].items()}
  served = serve(**features)
  expected = model(features)
  assert sorted(served) == ["finish", "like"]
  for task in ("finish", "like"):
    np.testing.assert_allclose(served[task].numpy(), expected[task].numpy(), atol=1e-5)


def test_esmm_predicts_the_product_down_the_funnel(schema):
  model = build_model("esmm", schema, tiny_model_config())
  features, _ = make_batch(schema)
  conditional = MultiTaskRankingModel.compute_logits(model, features)
  p = {t: tf.nn.sigmoid(conditional[t]).numpy() for t in TASKS}
  out = {t: v.numpy() for t, v in model(features).items()}
  np.testing.assert_allclose(out["finish"], p["finish"], rtol=1e-5)
  np.testing.assert_allclose(out["like"], p["finish"] * p["like"], rtol=1e-4)
  np.testing.assert_allclose(out["follow"], p["finish"] * p["like"] * p["follow"], rtol=1e-4)
  assert (out["like"] <= out["finish"] + 1e-7).all() and (out["follow"] <= out["like"] + 1e-7).all()


def test_aitm_transfers_from_earlier_to_later_tasks_only(schema):
  model = build_model("aitm", schema, tiny_model_config())
  features, labels = make_batch(schema)
  first = task_gradients(model, features, labels, "finish")
  for later in ("like", "follow"):
    assert present(first, f"_{later}/") and not nonzero(first, f"_{later}/")
  second = task_gradients(model, features, labels, "like")
  assert nonzero(second, "bottom_finish/")  # the transfer carries gradient back to finish
  assert nonzero(second, "transfer_like/") and nonzero(second, "ait_like/")
  assert not nonzero(second, "_follow/")


def test_aitm_calibration_penalizes_later_tasks_above_earlier_ones(schema):
  model = build_model("aitm", schema, tiny_model_config())
  zeros = tf.zeros([4])
  logits = {"finish": zeros - 1.0, "like": zeros + 1.0, "follow": zeros}
  expected = model.calibration_weight * (
      (tf.nn.sigmoid(1.0) - tf.nn.sigmoid(-1.0)) + 0.0)
  assert float(model.auxiliary_loss(logits, {})) == pytest.approx(float(expected), rel=1e-5)
  in_order = {"finish": zeros + 1.0, "like": zeros, "follow": zeros - 1.0}
  assert float(model.auxiliary_loss(in_order, {})) == 0.0


def test_ple_gate_sees_only_its_task_and_shared_experts(schema):
  config = tiny_model_config(num_shared_experts=3, num_specific_experts=2)
  model = build_model("ple", schema, config)
  layer = model.cgc_layers[0]
  features, labels = make_batch(schema)
  x = model.embedding(features)
  _, gates = layer(x * (len(TASKS) + 1), return_gates=True)
  assert [g.shape[-1] for g in gates] == [2 + 3] * len(TASKS)
  assert layer.candidate_owners(1) == ["like", "like", "shared", "shared", "shared"]
  grads = task_gradients(model, features, labels, "finish")
  for other in ("like", "follow"):
    assert present(grads, f"expert_{other}/") and not nonzero(grads, f"expert_{other}/")
  assert nonzero(grads, "expert_finish/") and nonzero(grads, "expert_shared/")
  assert model.embedding.table_names == ["shared"]


@pytest.mark.parametrize("name", ["me_mmoe", "me_ple"])
def test_multi_embedding_variants_have_task_and_shared_tables(name, schema):
  config = tiny_model_config()
  model = build_model(name, schema, config)
  assert model.embedding.table_names == TASKS + ["shared"]
  assert model.embedding.table.shape[-1] == config.embedding_dim * (len(TASKS) + 1)
  assert model.embedding.table.name.endswith("fused:0")


def test_me_mmoe_has_no_stop_gradient(schema):
  model = build_model("me_mmoe", schema, tiny_model_config())
  features, labels = make_batch(schema)
  grads = task_gradients(model, features, labels, "finish")
  assert nonzero(grads, "expert_like/") and nonzero(grads, "expert_follow/")


def test_me_ple_task_experts_read_their_own_embedding(schema):
  config = tiny_model_config()
  model = build_model("me_ple", schema, config)
  features, labels = make_batch(schema)
  grads = task_gradients(model, features, labels, "finish")
  table = grads[model.embedding.table.name]
  by_table = table.reshape(table.shape[0], len(TASKS) + 1, config.embedding_dim)
  norms = np.abs(by_table).sum(axis=(0, 2))
  assert norms[0] > 0 and norms[3] > 0  # finish's own slice and the shared one
  assert norms[1] == 0 and norms[2] == 0  # never like's or follow's


def test_omoe_gives_every_task_the_same_mixture(schema):
  model = build_model("omoe", schema, tiny_model_config())
  features, _ = make_batch(schema)
  hidden = model.backbone(model.embedding(features))
  for h in hidden[1:]:
    np.testing.assert_array_equal(h.numpy(), hidden[0].numpy())
  assert len(model.moe.gates) == 1


def test_single_task_models_share_nothing(schema):
  config = tiny_model_config()
  model = build_model("single_task", schema, config)
  assert model.embedding.table_names == TASKS
  features, labels = make_batch(schema)
  grads = task_gradients(model, features, labels, "like")
  table = grads[model.embedding.table.name]
  norms = np.abs(table.reshape(table.shape[0], len(TASKS), config.embedding_dim)).sum(axis=(0, 2))
  assert norms[1] > 0 and norms[0] == 0 and norms[2] == 0
  for other in ("finish", "follow"):
    assert present(grads, f"_{other}/") and not nonzero(grads, f"_{other}/")


def test_shared_bottom_feeds_every_tower_the_same_representation(schema):
  model = build_model("shared_bottom", schema, tiny_model_config())
  features, _ = make_batch(schema)
  hidden = model.backbone(model.embedding(features))
  assert len(hidden) == len(TASKS) and all(h is hidden[0] for h in hidden)


def test_funnel_models_warn_when_a_later_task_is_more_frequent_than_the_one_before():
  rates = {"click": 0.05, "like": 0.01, "long_view": 0.30}
  (warning,) = MODELS["esmm"].data_warnings(["click", "like", "long_view"], rates)
  assert warning == ("ESMM assumes the tasks form a funnel in schema order (like -> long_view), "
                     "but long_view's train positive rate 0.3000 is above like's 0.0100: "
                     "prepare the data with --tasks in funnel order to compare it fairly")
  assert len(MODELS["aitm"].data_warnings(["click", "like", "long_view"], rates)) == 1
  assert MODELS["aitm"].data_warnings(["long_view", "click", "like"], rates) == []
  assert MODELS["stem"].data_warnings(["like", "long_view"], rates) == []
