"""Batch scoring: a CSV of raw features through a SavedModel or a served model, streamed."""

from __future__ import annotations

import csv
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep.readers import ENCODING, check_file, decode_error, read_delimited
from data_prep.writer import BadRows
from stem_tfrs import files
from stem_tfrs.config import ConfigError
from stem_tfrs.data.schema import PADDING, read_numbers

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
      raise ConfigError(f"{input_path} line {chunk.index[row]:,}: column '{name}' holds "
                        f"{chunk[name].iloc[row]!r}, not a number") from None
    for row, field in chunk[name].items():
      for value in (field.split(LIST_SEPARATOR) if field else []) if rank == 2 else [field]:
        try:
          int(value)
        except ValueError:
          raise ConfigError(f"{input_path} line {row:,}: column '{name}' holds {value!r}, "
                            "not an int64 id") from None
    raise


def _header(input_path: str) -> List[str]:
  """The CSV's header line as data prep reads it; a one-line error for a file it cannot read."""
  check_file(input_path)  # missing, a directory, empty, gzip-compressed
  try:
    with open(input_path, encoding=ENCODING, newline="") as f:
      line = f.readline()
  except UnicodeDecodeError:
    raise decode_error(input_path, ENCODING) from None
  return next(csv.reader([line.rstrip("\r\n")]), [])


def score_csv(input_path: str, output_path: str, predict: Predict, specs: InputSpecs, *,
              batch_size: int = 8192, keep_columns: Sequence[str] = (),
              bad_rows: Optional[BadRows] = None) -> int:
  """Scores every row of `input_path`, writing one probability column per task.

  The CSV needs a header naming every model input (other columns are
  ignored); a multivalent input is one field of '|'-separated values. Rows are
  read and scored `batch_size` at a time, so the file may be larger than
  memory. The file is read as data prep reads raw files
  (`data_prep.readers.read_delimited`: UTF-8, a field may be quoted, blank
  lines skipped): a row with fewer or more fields than the header is a bad
  row, reported to `bad_rows` with its line and not scored (with a strict
  `BadRows`, the first one is an error). The output (the `keep_columns`, then
  one column per task) goes to a temporary sibling
  (`<output>.tmp-<host>-<pid>-csv`) renamed when complete; one left by a killed
  run is removed by the next run writing the same output.

  Returns:
    The number of rows scored.

  Raises:
    ConfigError: the file lacks a column, named; a `keep_columns` column is
      also a task (the prediction would replace it).
    DataError: the file is missing, a directory, empty or compressed
      (`data_prep.readers.check_file`), or not UTF-8 text (naming its line),
      or, with a strict `bad_rows`, a row is bad.
  """
  header = _header(input_path)
  missing = [name for name in list(specs) + list(keep_columns) if name not in header]
  if missing:
    raise ConfigError(f"{input_path} lacks column(s) {missing} that the model needs "
                      f"(it has: {', '.join(header)})")
  bad_rows = bad_rows if bad_rows is not None else BadRows()
  directory, name = os.path.split(output_path)
  prefix = f"{name}.tmp-"
  files.remove_abandoned(directory or ".", prefix)
  tmp = os.path.join(directory, files.temp_prefix(prefix) + "csv")
  rows, first = 0, True
  try:
    for chunk in read_delimited(input_path, sep=",", required=list(specs) + list(keep_columns),
                                bad_rows=bad_rows, chunk_rows=batch_size):
      frame = chunk.frame  # its index: each row's line in the file
      if not len(frame):
        continue
      outputs = predict({name: _column(input_path, frame, name, spec)
                         for name, spec in specs.items()})
      if first:
        clash = [c for c in keep_columns if c in outputs]
        if clash:
          raise ConfigError(
              f"--keep_columns names {clash}, {'a task' if len(clash) == 1 else 'tasks'} the "
              "model predicts: the output holds each task's prediction under its name, which "
              "would replace the input's values; copy the column under another name to keep it")
      kept = frame[list(keep_columns)].reset_index(drop=True)
      for task in sorted(outputs):
        kept[task] = np.asarray(outputs[task], dtype=np.float32)
      kept.to_csv(tmp, mode="w" if first else "a", header=first, index=False)
      rows, first = rows + len(frame), False
    if first:
      if bad_rows.total:
        raise ConfigError(f"input file {input_path} has no row to score: every row is bad "
                          f"({bad_rows.first()})")
      raise ConfigError(f"input file {input_path} has a header but no rows")
    os.replace(tmp, output_path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return rows
