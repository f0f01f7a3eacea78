"""SavedModel export for TF Serving: raw features in, one probability per task out.

Layout (what TF Serving's file-system source polls):

    <export_dir>/<model_name>/<version>/saved_model.pb
                                       /variables/...
                                       /assets/<vocabulary files>
                                       /assets.extra/schema.json, config.json,
                                                     tf_serving_warmup_requests

`assets.extra/export.json` says what the weights are stored and multiplied in
(`{"dtype_policy": "float32"}`; see `export_saved_model(precision=...)`).

`<version>` is an integer from 1 to 2^63-1 (TF Serving parses versions as
int64): by default the current unix time in seconds, or one more than the
largest existing version if that is not larger (and the next free one if
another export takes it meanwhile), so a version is never reused.
The model is written under a non-numeric temporary sibling
(`.tmp-<host>-<pid>-<version>`, which TF Serving ignores) and renamed into
place only once complete, so a server polling the base path never loads a
half-written model; one left by a killed export is removed by the next export
to the same model directory (`files.remove_abandoned`), never a live one's.

Signature `serving_default`: one input per raw feature column, named after the
column, shape [None], dtype from the schema (tf.string for ids; float32 for a
numeric feature, NaN when missing); one float32 output per task, named after
the task, shape [None], the task probability. Ids never seen in training map
to the OOV row inside the model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from stem_tfrs import files, models
from stem_tfrs.data import pipeline
from stem_tfrs.training import checkpoints
from stem_tfrs.config import EXPORT_PRECISIONS, ModelConfig
from stem_tfrs.data.records import serving_input_signature
from stem_tfrs.data.schema import PADDING, Schema, SchemaError
from stem_tfrs.serving import warmup


class _ServingModule(tf.Module):
  """What is saved: the model and its serving function."""

  def __init__(self, model: tf.keras.Model, schema: Schema):
    super().__init__()
    self.model = model
    self._lists = {f.name: f.multivalent for f in schema.features}
    self._lists.update({name: False for name in schema.numeric_names})
    self.serve = tf.function(self._serve,
                             input_signature=[serving_input_signature(schema)])

  def _serve(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    features, same_rows = _checked_inputs(features, self._lists)
    with tf.control_dependencies([same_rows]):
      probabilities = self.model(features, training=False)
    return {task: tf.cast(p, tf.float32) for task, p in probabilities.items()}


def _checked_inputs(features: Dict[str, tf.Tensor], lists: Dict[str, bool]):
  """(`features` checked to be [rows], or [rows, width] for a list; an assertion of equal rows).

  TF Serving feeds a request's tensors whatever their shape, and the model
  would flatten a [2, 2] input into 4 rows. `tf.ensure_shape` checks at run
  time and names the input; a failed row check lists each input's rows.
  The checks are two small ops per input, within the noise of a batch-1
  call (`benchmarks/serving.py`).

  The row check is the bare `Assert` op: `tf.debugging.Assert` puts it in a
  `tf.cond`, whose Switch and Merge move the whole graph onto TensorFlow's
  slower control-flow executor, which small batches feel
  (`benchmarks/serving.py`).
  """
  checked = {name: tf.ensure_shape(x, [None, None] if lists[name] else [None])
             for name, x in features.items()}
  rows = tf.stack([tf.shape(x, out_type=tf.int64)[0] if lists[name]
                   else tf.size(x, out_type=tf.int64) for name, x in checked.items()])
  same_rows = tf.raw_ops.Assert(
      condition=tf.reduce_all(tf.equal(rows, rows[0])),
      data=[tf.constant("serving inputs must have the same number of rows; inputs and rows:"),
            tf.constant(list(checked)), rows], summarize=len(checked))
  return checked, same_rows


def sample_batches(schema: Schema, sizes=(1, 8, 64)) -> List[Dict[str, np.ndarray]]:
  """Raw-feature batches of (up to) the given sizes, for TF Serving's warmup file.

  Rows of the test split, else of the first other split with rows. Without
  any, every value is missing (the OOV rows), which runs the same graph.
  """
  for split in ("test", "valid", "train"):
    if not schema.splits.get(split):
      continue
    batches = [next(iter(pipeline.make_dataset(schema, split, size)), None) for size in sizes]
    if None not in batches:
      return [{name: value.numpy() for name, value in features.items()}
              for features, _ in batches]
  missing = [{f.name: np.full([size, 1] if f.multivalent else [size], PADDING[f.dtype],
                              dtype=np.int64 if f.dtype == "int64" else object)
              for f in schema.features} for size in sizes]
  for batch, size in zip(missing, sizes):
    batch.update({name: np.full([size], np.nan, np.float32) for name in schema.numeric_names})
  return missing


def with_precision(model: tf.keras.Model, precision: Optional[str]) -> tf.keras.Model:
  """`model`, or a copy of it whose weights are stored and multiplied in `precision`.

  The copy is built under Keras' dtype policy named `precision` (for
  "bfloat16", variables and arithmetic in bfloat16; BatchNormalization
  keeps its parameters and statistics in float32 under it) and given
  `model`'s weights cast to it; logits are cast to float32 before the
  sigmoid whatever the policy, so probabilities stay float32. `None`, or
  the policy `model` already has, returns `model` itself.

  Why bfloat16: serving a batch reads every weight once, so at small batches
  a call costs the bytes of the weights, and bfloat16 halves them; at large
  batches bfloat16 products run on the CPU's bf16 units. The probabilities
  move by about the rounding of 8-bit mantissas;
  `benchmarks/export_precision.py` measures the AUC change of a run's two
  exports (docs/performance.md).

  Raises:
    ValueError: `precision` is not one of `EXPORT_PRECISIONS`.
  """
  if precision is not None and precision not in EXPORT_PRECISIONS:
    raise ValueError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, "
                     f"got '{precision}'")
  if precision is None or precision == model.dtype_policy.name:
    return model
  with models.global_dtype_policy(precision):
    copy = type(model)(model.schema, model.config, name=model.name).build_from_schema()
  if [(w.name, w.shape) for w in copy.weights] != [(w.name, w.shape) for w in model.weights]:
    raise ValueError(f"a {precision} copy of {model.name} has other weights than the model")
  for target, source in zip(copy.weights, model.weights):
    target.assign(tf.cast(source, target.dtype))
  return copy


def export_run(run_dir: str, export_dir: str, version: Optional[int] = None,
               precision: Optional[str] = None) -> str:
  """Exports the best checkpoint of a finished run (its config.json says what to build).

  The weights are exported in `precision` (see `with_precision`); default:
  the run's own `export_precision` (float32 for runs that predate it),
  whatever the run's `mixed_precision`.

  Raises:
    SchemaError: the run directory lacks config.json or a checkpoint, or its
      schema is gone.
  """
  config_path = os.path.join(run_dir, "config.json")
  checkpoint = os.path.join(run_dir, "checkpoints", "best")
  if not os.path.isfile(config_path):
    raise SchemaError(f"{run_dir} is not a run directory: it has no config.json")
  if not tf.io.gfile.exists(checkpoint + ".index"):
    raise SchemaError(f"{run_dir} has no best checkpoint (checkpoints/best); did it finish "
                      "an epoch?")
  with open(config_path) as f:
    config = json.load(f)
  schema = Schema.load(os.path.dirname(config["schema"]))
  model = models.build_model(config["model"], schema, ModelConfig(**config["model_config"]))
  checkpoints.load_weights(model, checkpoint)
  if precision is None:
    precision = config.get("train_config", {}).get("export_precision", "float32")
  return export_saved_model(model, schema, export_dir, config["model"], version=version,
                            extra_files={"config.json": config}, precision=precision)


#: The largest version TF Serving can load: it parses version directories as int64.
MAX_VERSION = 2**63 - 1
#: Names the temporary sibling of a version being written (`files.temp_prefix`).
TEMP_PREFIX = ".tmp-"


def check_version(version) -> int:
  """`version`, or a ValueError unless it is an integer from 1 to `MAX_VERSION`."""
  if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
    raise ValueError(f"version {version}: an export version must be an integer from 1 to "
                     f"{MAX_VERSION} (2^63-1; TF Serving reads versions as int64)")
  return version


def versions(base_dir: str) -> list:
  """The integer versions present under `base_dir`, ascending."""
  if not tf.io.gfile.isdir(base_dir):
    return []
  return sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(base_dir)
                if n.rstrip("/").isdigit())


def export_saved_model(model: tf.keras.Model, schema: Schema, export_dir: str,
                       model_name: str, version: Optional[int] = None,
                       extra_files: Optional[Dict[str, dict]] = None,
                       warmup_batches: Optional[List[Dict[str, np.ndarray]]] = None,
                       precision: Optional[str] = None) -> str:
  """Exports `model` as `<export_dir>/<model_name>/<version>/`; returns that path.

  Args:
    model: A trained `MultiTaskRankingModel` (its `call` gives probabilities).
    schema: The schema it was trained on (defines the serving inputs).
    export_dir: Base directory of exports.
    model_name: The model's name in TF Serving.
    version: Integer version, 1 to `MAX_VERSION`; default: unix time, or one
      past the largest (see `_next_version`).
    extra_files: File name -> JSON content, written into `assets.extra/`
      (the schema is always written as `schema.json`).
    warmup_batches: Raw-feature batches for TF Serving's warmup file
      (`[]`: none); default: `sample_batches(schema)`.
    precision: "float32" or "bfloat16": what the exported weights are stored
      and multiplied in (`with_precision`); default: as `model` has them
      (its Keras dtype policy, which `assets.extra/export.json` records).

  Raises:
    FileExistsError: `version` is given and already exported.
    ValueError: `version` is outside 1 to `MAX_VERSION`; `precision` is not
      one of `EXPORT_PRECISIONS`.
  """
  model = with_precision(model, precision)
  base = os.path.join(export_dir, model_name)
  chosen = version is None
  if chosen:
    version = _next_version(base)
  elif check_version(version) in versions(base):
    raise FileExistsError(f"version {version} already exists in {base}")
  tf.io.gfile.makedirs(base)
  for path in files.remove_abandoned(base, TEMP_PREFIX):
    logging.info("removed %s, left by an export that was killed", path)
  tmp = os.path.join(base, files.temp_prefix(TEMP_PREFIX) + str(version))
  try:
    module = _ServingModule(model, schema)
    with checkpoints.without_optimizer(model):
      tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    extra = os.path.join(tmp, "assets.extra")
    tf.io.gfile.makedirs(extra)
    written = {"schema.json": schema.to_json(),
               "export.json": {"dtype_policy": model.dtype_policy.name}, **(extra_files or {})}
    for name, content in written.items():
      with tf.io.gfile.GFile(os.path.join(extra, name), "w") as f:
        f.write(json.dumps(content, indent=2) + "\n")
    if warmup_batches is None:
      warmup_batches = sample_batches(schema)
    if warmup_batches:
      warmup.write_warmup(os.path.join(extra, warmup.WARMUP_FILE), warmup_batches, model_name)
    while True:
      try:
        tf.io.gfile.rename(tmp, os.path.join(base, str(version)))
        break
      except tf.errors.AlreadyExistsError:
        if not chosen:
          raise FileExistsError(f"version {version} already exists in {base}") from None
        version = _next_version(base)  # another export took it meanwhile
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return os.path.join(base, str(version))


def _next_version(base: str) -> int:
  """The current unix time, or one past the largest version in `base` if that is not larger.

  Version directories beyond `MAX_VERSION` (TF Serving cannot load them; older
  code wrote them for an oversized --version) are ignored when choosing, with
  a warning naming them: the result is never beyond `MAX_VERSION`.

  Raises:
    ValueError: `base` holds version `MAX_VERSION` itself: none is left above it.
  """
  present = versions(base)
  beyond = [v for v in present if v > MAX_VERSION]
  if beyond:
    logging.warning("ignoring %s in %s: beyond 2^63-1, TF Serving cannot load them",
                    ", ".join(map(str, beyond)), base)
  if MAX_VERSION in present:
    raise ValueError(f"{base}: version {MAX_VERSION} exists (2^63-1, the largest TF Serving "
                     "loads): no version is left above it; give --version")
  return max([int(time.time())] + [v + 1 for v in present if v <= MAX_VERSION])
