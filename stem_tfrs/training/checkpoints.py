"""A model's weights without its optimizer, checked restores, and checkpoints of earlier layouts.

Every restore of stem_tfrs (export, evaluation after training, the benchmark's
and the resume from backup/) restores every variable of the model from a
checkpoint that holds nothing else, or raises a `CheckpointError` naming the
checkpoint and the first variables that differ: a checkpoint is never loaded
into a model of another configuration, leaving some weights at random.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from typing import Callable, Sequence

from google.protobuf.message import DecodeError
import numpy as np
import tensorflow as tf

from stem_tfrs.errors import first_line
from stem_tfrs.errors import CheckpointError  # noqa: F401  (raised here; defined with the others)

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


#: What reading a damaged checkpoint raises: TensorFlow's DataLossError and
#: others ("not an sstable"), an IndexError ("Read less bytes than
#: requested") for a truncated data file, a DecodeError for a garbled object graph.
_UNREADABLE = (tf.errors.OpError, IndexError, DecodeError)


def files_of(checkpoint: str) -> str:
  """`checkpoint` (a prefix) with the names of its files: "<prefix> (best.index, best.data-...)"."""
  names = sorted(os.path.basename(p) for p in glob.glob(glob.escape(checkpoint) + ".*"))
  return f"{checkpoint} ({', '.join(names)})" if names else checkpoint


def checked_restore(restore: Callable[[], object], checkpoint: str,
                    variables: Sequence[tf.Variable], what: str, remedy: str,
                    damaged: str) -> None:
  """Runs `restore` (which returns a load status) and checks that it restored exactly `variables`.

  Args:
    restore: Restores `checkpoint`, returning TensorFlow's load status.
    checkpoint: The checkpoint prefix, for the messages.
    variables: Every variable the restore must give a value (to name those it did not).
    what: Whose they are, for the message ("the model's").
    remedy: What the user can do about a checkpoint of other variables.
    damaged: What the user can do about one that cannot be read.

  Raises:
    CheckpointError: the checkpoint cannot be read, a value has another
      shape, a variable was not restored or a value of the checkpoint was
      left over.
  """
  refused = None
  with _unused_values_unlogged():
    try:
      status = restore()
    except _UNREADABLE as e:
      refused = unreadable(checkpoint, e, damaged)
    except ValueError as e:  # Keras: "Received incompatible tensor with shape ..."
      refused = CheckpointError(f"{checkpoint}: {first_line(str(e))}; {remedy}")
  if refused is not None:
    raise refused
  try:
    status.assert_consumed()
  except AssertionError as e:
    # Refused: TensorFlow need not also log every unused value of it when the status goes.
    status.expect_partial()
    missing = _not_restored(status, variables)
    if missing or "not bound to checkpointed values" in str(e):
      count = len(missing) if missing else "some"
      raise CheckpointError(
          f"{checkpoint} does not restore {count} of {what} {len(variables)} variables "
          f"(the first: {', '.join(missing[:3]) or first_line(str(e))[:200]}); "
          f"{remedy}") from None
    unused = list(dict.fromkeys(re.findall(r'full_name: "([^"]+)"', str(e))))
    raise CheckpointError(
        f"{checkpoint} holds {len(unused) or 'some'} values the model does not have "
        f"(the first: {', '.join(unused[:3]) or first_line(str(e))[:200]}); {remedy}") from None


@contextlib.contextmanager
def _unused_values_unlogged():
  """TensorFlow's warnings about a refused restore's unused values, dropped.

  A restore that fails midway leaves TensorFlow's restore state to log one
  warning per value of the checkpoint it did not use when it is freed: here,
  when the failure is handled, inside this block. The refusal names them.
  """
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel("ERROR")
  try:
    yield
  finally:
    logger.setLevel(level)


def unreadable(checkpoint: str, error: Exception, remedy: str) -> CheckpointError:
  """The error for `checkpoint`, which raised `error` as it was read."""
  return CheckpointError(f"checkpoint {files_of(checkpoint)} cannot be read "
                         f"({first_line(getattr(error, 'message', None) or str(error))}): it is "
                         f"damaged (truncated?); {remedy}")


def _not_restored(status, variables: Sequence[tf.Variable]) -> list:
  """The names of `variables` that `status`'s restore gave no value, as far as TF tells.

  TensorFlow marks each object a restore assigns with the restore's id; the
  load status only says how many it did not, in a repr of their values.
  """
  restore_uid = getattr(getattr(status, "_checkpoint", None), "restore_uid", None)
  if restore_uid is None:
    return []
  return [v.name.split(":")[0] for v in variables
          if getattr(v, "_update_uid", restore_uid) < restore_uid]


def load_weights(model: tf.keras.Model, checkpoint: str) -> None:
  """Restores `checkpoint` (a TF checkpoint prefix of the model's weights) into the built `model`.

  Every variable of the model must be restored, and every value of the
  checkpoint used; a compiled model's optimizer is left out (the best
  checkpoint holds the weights alone). A checkpoint whose expert groups hold
  their first layer side by side (as stem_tfrs wrote them before the
  stacked layout) is converted on the way, in a temporary copy: the run
  directory is not touched.

  Raises:
    CheckpointError (a ValueError): the checkpoint cannot be read, or was
      written by a model of another configuration (a weight of another
      shape, a variable it lacks or one the model lacks).
  """
  remedy = ("it was written by a model of another configuration (a run directory's "
            "config.json must describe its checkpoint)")
  damaged = "restore its files, or train the run again"
  with without_optimizer(model), tempfile.TemporaryDirectory() as work:
    try:
      source = _stacked_copy(checkpoint, model, work) if _side_by_side(checkpoint) else checkpoint
    except _UNREADABLE as e:
      raise unreadable(checkpoint, e, damaged) from e
    checked_restore(lambda: model.load_weights(source), checkpoint, model.variables,
                    "the model's", remedy, damaged)


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
