"""A model's weights without its optimizer, and restoring checkpoints of earlier layouts."""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
import tensorflow as tf

#: Checkpoint keys of an expert group's first layer, the weights whose layout changed: before,
#: one [in, K * H] kernel with the experts' blocks side by side and one [K * H] bias; now a
#: [K, in, H] kernel and a [K, H] bias, as the group's later layers.
_FIRST_LAYER_KEYS = ("/kernel_0/.ATTRIBUTES/VARIABLE_VALUE", "/bias_0/.ATTRIBUTES/VARIABLE_VALUE")


@contextlib.contextmanager
def without_optimizer(model: tf.keras.Model):
  """`model` without its optimizer while the block runs.

  A compiled model tracks its optimizer, so a checkpoint or SavedModel of it
  also holds the step count and Adam's two moments per weight: three times
  the model's own variables, the embedding table's moments included. Saved
  inside the block, only the model's variables are written, as with Keras'
  own `model.save(include_optimizer=False)`.
  """
  optimizer = getattr(model, "optimizer", None)
  if optimizer is None:
    yield
    return
  model.optimizer = None
  model._delete_tracking("optimizer")  # pylint: disable=protected-access
  try:
    yield
  finally:
    model.optimizer = optimizer


def load_weights(model: tf.keras.Model, checkpoint: str) -> None:
  """Restores `checkpoint` (a TF checkpoint prefix) into the built `model`.

  A checkpoint whose expert groups hold their first layer side by side (as
  stem_tfrs wrote them before the stacked layout) is converted on the way,
  in a temporary copy: the run directory is not touched.

  Raises:
    ValueError: a weight of the checkpoint has a shape the model cannot take.
  """
  if not _side_by_side(checkpoint):
    model.load_weights(checkpoint).expect_partial()
    return
  with tempfile.TemporaryDirectory() as work:
    model.load_weights(_stacked_copy(checkpoint, model, work)).expect_partial()


def _side_by_side(checkpoint: str) -> bool:
  """Whether `checkpoint` holds an expert group's first-layer kernel as [in, K * H]."""
  return any(name.endswith(_FIRST_LAYER_KEYS[0]) and len(shape) == 2
             for name, shape in tf.train.list_variables(checkpoint))


def _stacked_copy(checkpoint: str, model: tf.keras.Model, work: str) -> str:
  """A copy of `checkpoint` under `work` with side-by-side first layers stacked."""
  expected = os.path.join(work, "expected")
  model.save_weights(expected)  # the shapes the model takes, key by key
  shapes = dict(tf.train.list_variables(expected))
  reader = tf.train.load_checkpoint(checkpoint)
  names, tensors = [], []
  for key in reader.get_variable_to_dtype_map():
    value, want = reader.get_tensor(key), shapes.get(key)  # (the object graph is bytes)
    if want is not None and list(np.shape(value)) != list(want):
      if key.endswith(_FIRST_LAYER_KEYS) and len(want) == 3 and value.shape == (
          want[1], want[0] * want[2]):                       # [in, K*H] -> [K, in, H]
        value = value.reshape(want[1], want[0], want[2]).transpose(1, 0, 2)
      elif key.endswith(_FIRST_LAYER_KEYS) and len(want) == 2 and value.shape == (
          want[0] * want[1],):                               # [K*H] -> [K, H]
        value = value.reshape(want)
      else:
        raise ValueError(f"{checkpoint}: weight {key} has shape {list(np.shape(value))}, "
                         f"the model takes {want}; was it trained with another configuration?")
    names.append(key)
    tensors.append(tf.constant(value))
  upgraded = os.path.join(work, "stacked")
  tf.raw_ops.SaveV2(prefix=upgraded, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=tensors)
  return upgraded
