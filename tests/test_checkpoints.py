"""stem_tfrs.training.checkpoints: a run's weights restore, in the stacked layout or the earlier one."""

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import build_model, make_dataset
from stem_tfrs.training import checkpoints
from stem_tfrs.data.schema import Schema

from tests.support import tiny_model_config

_FIRST_LAYER = ("/kernel_0/.ATTRIBUTES/VARIABLE_VALUE", "/bias_0/.ATTRIBUTES/VARIABLE_VALUE")


def _write(prefix, tensors):
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[""] * len(tensors),
                    tensors=[tf.constant(v) for v in tensors.values()])


def _side_by_side(checkpoint, prefix):
  """`checkpoint` rewritten as stem_tfrs wrote it before: expert first layers [in, K*H], [K*H]."""
  reader = tf.train.load_checkpoint(checkpoint)
  tensors, converted = {}, 0
  for key in reader.get_variable_to_dtype_map():
    value = reader.get_tensor(key)
    if key.endswith(_FIRST_LAYER):
      k = value.shape[0]
      value = (value.transpose(1, 0, 2).reshape(value.shape[1], -1) if value.ndim == 3
               else value.reshape(-1))
      converted += k > 1
    tensors[key] = value
  _write(prefix, tensors)
  return converted


@pytest.mark.parametrize("name", ["stem", "mmoe"])
def test_side_by_side_checkpoint_restores_into_stacked_experts(name, tiny_data, tmp_path):
  schema = Schema.load(tiny_data)
  features = next(iter(make_dataset(schema, "test", 64)))[0]
  tf.keras.utils.set_random_seed(1)
  trained = build_model(name, schema, tiny_model_config())
  trained.save_weights(str(tmp_path / "stacked"))
  assert _side_by_side(str(tmp_path / "stacked"), str(tmp_path / "old")) >= 1
  tf.keras.utils.set_random_seed(2)
  restored = build_model(name, schema, tiny_model_config())
  with pytest.raises(ValueError, match="incompatible tensor"):
    restored.load_weights(str(tmp_path / "old"))  # Keras alone cannot
  checkpoints.load_weights(restored, str(tmp_path / "old"))
  for task, p in trained(features).items():
    np.testing.assert_array_equal(restored(features)[task].numpy(), p.numpy())
  checkpoints.load_weights(restored, str(tmp_path / "stacked"))  # the current layout as is


def test_checkpoint_of_another_configuration_is_a_clear_error(tiny_data, tmp_path):
  schema = Schema.load(tiny_data)
  build_model("stem", schema, tiny_model_config(embedding_dim=4)).save_weights(
      str(tmp_path / "other"))
  _side_by_side(str(tmp_path / "other"), str(tmp_path / "other_old"))
  model = build_model("stem", schema, tiny_model_config(embedding_dim=8))
  with pytest.raises(ValueError, match="incompatible tensor"):  # Keras' own message
    checkpoints.load_weights(model, str(tmp_path / "other"))
  with pytest.raises(ValueError, match=r"has shape .* the model takes .* another configuration"):
    checkpoints.load_weights(model, str(tmp_path / "other_old"))


@pytest.mark.parametrize("saved, loaded, says", [
    (1, 2, r"does not restore 18 of the model's \d+ variables \(the first: stem/stem_layer_\d/"),
    (2, 1, r"holds \d+ values the model does not have \(the first: stem/stem_layer_\d/"),
])
def test_a_checkpoint_of_another_depth_is_refused_naming_the_first_variables(
    tiny_data, tmp_path, saved, loaded, says):
  schema = Schema.load(tiny_data)
  build_model("stem", schema, tiny_model_config(num_layers=saved)).save_weights(
      str(tmp_path / "saved"))
  model = build_model("stem", schema, tiny_model_config(num_layers=loaded))
  with pytest.raises(ValueError, match=rf"{tmp_path}/saved {says}.*another configuration"):
    checkpoints.load_weights(model, str(tmp_path / "saved"))


def test_a_compiled_model_restores_a_checkpoint_of_the_weights_alone(tiny_data, tmp_path):
  schema = Schema.load(tiny_data)
  build_model("stem", schema, tiny_model_config()).save_weights(str(tmp_path / "weights"))
  model = build_model("stem", schema, tiny_model_config())
  model.compile(optimizer=tf.keras.optimizers.Adam())  # its optimizer is not in the checkpoint
  checkpoints.load_weights(model, str(tmp_path / "weights"))
  assert model.optimizer is not None
