"""Batch scoring: a CSV of raw features through a SavedModel or a served model, streamed."""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf

from stem_tfrs.config import ConfigError
from stem_tfrs.schema import PADDING, read_numbers

LIST_SEPARATOR = "|"
#: name -> (rank, dtype): rank 1 for one value per row, 2 for a padded list; dtype
#: "string", "int64" (ids) or "float32" (a numeric feature).
InputSpecs = Dict[str, Tuple[int, str]]
_TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
Predict = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def saved_model_predictor(saved_model: str) -> Tuple[Predict, InputSpecs]:
  """A predict function over a SavedModel's `serving_default`, and its inputs."""
  serve = tf.saved_model.load(saved_model).signatures["serving_default"]
  _, inputs = serve.structured_input_signature
  names = {dtype: name for name, dtype in _TF_DTYPES.items()}
  specs = {name: (spec.shape.rank, names.get(spec.dtype, "string"))
           for name, spec in inputs.items()}

  def predict(features: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    outputs = serve(**{k: tf.constant(v, dtype=_TF_DTYPES[specs[k][1]])
                       for k, v in features.items()})
    return {task: v.numpy() for task, v in outputs.items()}
  return predict, specs


def schema_inputs_and_tasks(schema_json: str) -> Tuple[InputSpecs, List[str]]:
  """Input specs and task names from a schema.json (an export's assets.extra/schema.json)."""
  with open(schema_json) as f:
    schema = json.load(f)
  specs = {f["name"]: (2 if f.get("multivalent") else 1, f.get("dtype", "string"))
           for f in schema["features"]}
  specs.update({f["name"]: (1, "float32") for f in schema.get("numeric_features", [])})
  return specs, list(schema["labels"])


def column_array(values: pd.Series, rank: int, dtype: str) -> np.ndarray:
  """A CSV column as a model input: '|'-separated lists padded for rank 2.

  A float32 column is read as data_prep reads it: a blank field is NaN
  (missing), any other field must be a number.
  """
  if dtype == "float32":
    numbers, bad = read_numbers(values)
    if bad.any():
      raise ValueError(f"not a number: {values.iloc[int(np.argmax(bad))]!r}")
    return numbers
  if rank == 2:
    padding = str(PADDING[dtype])
    lists = [v.split(LIST_SEPARATOR) if v else [] for v in values]
    width = max([len(v) for v in lists] + [1])
    array = np.array([v + [padding] * (width - len(v)) for v in lists], dtype=object)
    array = array.reshape(len(lists), width)
  else:
    array = values.to_numpy(dtype=object)
  return array.astype(np.int64) if dtype == "int64" else array


def _column(input_path: str, chunk: pd.DataFrame, name: str, spec: Tuple[int, str]) -> np.ndarray:
  """`column_array` of a CSV chunk's column, naming the line of a value it cannot hold."""
  try:
    return column_array(chunk[name], *spec)
  except ValueError:
    rank, dtype = spec
    if dtype == "float32":
      _, bad = read_numbers(chunk[name])
      row = int(np.argmax(bad))
      raise ConfigError(f"{input_path} line {chunk.index[row] + 2:,}: column '{name}' holds "
                        f"{chunk[name].iloc[row]!r}, not a number") from None
    for row, field in chunk[name].items():
      for value in (field.split(LIST_SEPARATOR) if field else []) if rank == 2 else [field]:
        try:
          int(value)
        except ValueError:
          raise ConfigError(f"{input_path} line {row + 2:,}: column '{name}' holds {value!r}, "
                            "not an int64 id") from None
    raise


def score_csv(input_path: str, output_path: str, predict: Predict, specs: InputSpecs, *,
              batch_size: int = 8192, keep_columns: Sequence[str] = ()) -> int:
  """Scores every row of `input_path`, writing one probability column per task.

  The CSV needs a header naming every model input (other columns are
  ignored); a multivalent input is one field of '|'-separated values. Rows are
  read and scored `batch_size` at a time, so the file may be larger than
  memory. The output (the `keep_columns`, then one column per task) goes to a
  temporary file renamed when complete.

  Returns:
    The number of rows scored.

  Raises:
    ConfigError: the file is missing, or lacks a column, named.
  """
  if not os.path.isfile(input_path):
    raise ConfigError(f"input file {input_path} does not exist")
  try:
    header = list(pd.read_csv(input_path, nrows=0).columns)
  except pd.errors.EmptyDataError:
    raise ConfigError(f"input file {input_path} is empty") from None
  missing = [name for name in list(specs) + list(keep_columns) if name not in header]
  if missing:
    raise ConfigError(f"{input_path} lacks column(s) {missing} that the model needs "
                      f"(it has: {', '.join(header)})")
  tmp = f"{output_path}.tmp-{os.getpid()}"
  rows, first = 0, True
  try:
    for chunk in pd.read_csv(input_path, dtype=str, keep_default_na=False,
                             chunksize=batch_size):
      outputs = predict({name: _column(input_path, chunk, name, spec)
                         for name, spec in specs.items()})
      frame = chunk[list(keep_columns)].reset_index(drop=True)
      for task in sorted(outputs):
        frame[task] = np.asarray(outputs[task], dtype=np.float32)
      frame.to_csv(tmp, mode="w" if first else "a", header=first, index=False)
      rows, first = rows + len(chunk), False
    if first:
      raise ConfigError(f"input file {input_path} has a header but no rows")
    os.replace(tmp, output_path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return rows
