"""The schema of a prepared data set: features, labels (= tasks), group column, shards.

A prepared data set is a directory written by `data_prep`:

    <data_dir>/schema.json         this schema
    <data_dir>/stats.json          {"<split>": {"rows": n, "positive_rate": {"<task>": x}}}
    <data_dir>/vocab/<feature>.txt one raw value per line, most frequent first
    <data_dir>/<split>-NNNNN-of-MMMMM.tfrecord   tf.train.Example shards

A record (one `tf.train.Example`) holds a block of up to `rows_per_record`
consecutive rows, column by column: each categorical feature a list of the
block's raw values (bytes for `dtype="string"`, int64 for `dtype="int64"`),
each numeric feature a float_list of the block's values (NaN where
missing), each label a list of its int64 0/1 values, all of the same length. A
multivalent feature holds the block's lists one after the other, and their
lengths in `<name>#row_lengths`. With `rows_per_record` 1 (the default when
schema.json does not say) a record is one row, and a multivalent feature
holds its list with no lengths. Blocks make reading cheap: tf.data and the
parser pay per record, not per row, which is why data_prep writes 64 rows a
record (`benchmarks/input_pipeline.py` times the pipeline over such blocks).
A one-row record is also a valid block.

The ids stay raw in the shards: the model maps them to rows itself, so the
exported SavedModel takes the same raw ids a serving request carries.

`schema.json` looks like:

    {"version": 1,
     "features": [{"name": "uid", "dtype": "string",
                   "vocabulary_file": "vocab/uid.txt", "vocabulary_size": 4211},
                  {"name": "device_id", "dtype": "string", "hash_buckets": 100000}],
     "numeric_features": [{"name": "duration", "mean": 3.1, "std": 0.9,
                           "log1p": true}],            (optional)
     "labels": ["finish", "like"],
     "group_column": "uid",
     "rows_per_record": 64,
     "splits": {"train": ["train-00000-of-00004.tfrecord", ...], ...}}

Paths inside the schema are relative to the schema's directory, and must resolve
(symlinks included) inside it: `Schema.load` refuses any other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from stem_tfrs.errors import SchemaError  # noqa: F401  (raised here; defined with the others)

SCHEMA_FILE = "schema.json"
STATS_FILE = "stats.json"
#: stats.json's per-split {shard file name: size in bytes}, as data_prep wrote them.
SHARD_BYTES = "shard_bytes"
SPLITS = ("train", "valid", "test")
_DTYPES = ("string", "int64")
#: What pads a multivalent feature's lists to a rectangle, per dtype; never looked up.
PADDING = {"string": "", "int64": -1}


def row_lengths_key(feature: str) -> str:
  """Key of a multivalent feature's list lengths in a block record.

  '#' cannot appear in a column name that is also a SavedModel input name.
  """
  return f"{feature}#row_lengths"


#: A column name: it names a SavedModel input or output, Keras layers and variables.
COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_column_names(names: Sequence[str]) -> None:
  """A SchemaError for the first name that cannot name a serving input, output or layer."""
  for name in names:
    if not isinstance(name, str) or not COLUMN_NAME.fullmatch(name):
      raise SchemaError(
          f"column name {name!r} cannot name a SavedModel input or output: use ASCII letters, "
          "digits and '_', starting with a letter (rename the raw column)")


#: Names no task may take, and why: "shared" names the shared experts, gates and
#: embedding table next to each task's own (`expert_<task>`, `gate_<task>`); "group"
#: holds the group ids beside the tasks' scores in `evaluation.predict`'s output.
RESERVED_TASK_NAMES = {
    "shared": "it names the shared experts, gates and embedding table, which a task's own "
              "would be mistaken for",
    "group": "evaluation keeps the group ids (user ids) under that name beside the tasks' "
             "scores",
}


def check_task_names(tasks: Sequence[str]) -> None:
  """A SchemaError for a task name the model or the evaluation uses for something else."""
  for task in tasks:
    if task in RESERVED_TASK_NAMES:
      raise SchemaError(f"task name {task!r} is reserved: {RESERVED_TASK_NAMES[task]} "
                        "(rename the label column)")


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
  """One categorical input column.

  Attributes:
    name: Column name in the shards and input name of the SavedModel.
    dtype: "string" (default) or "int64": the raw id type.
    vocabulary_file: Path of the vocabulary, one value per line, relative to
      the schema's directory. Values not in it map to the one OOV row.
    vocabulary_size: Number of lines in `vocabulary_file` (without OOV).
    hash_buckets: Instead of a vocabulary, hash raw values into this many rows.
    multivalent: The column holds a list of values per example (genres,
      tags); the model mean-pools their embeddings. In shards a list is one
      bytes_list / int64_list of any length; at serving, a [None, None] tensor
      padded with "" (or -1 for int64), the padding being ignored.
  """
  name: str
  dtype: str = "string"
  vocabulary_file: Optional[str] = None
  vocabulary_size: Optional[int] = None
  hash_buckets: Optional[int] = None
  multivalent: bool = False

  def __post_init__(self):
    if self.dtype not in _DTYPES:
      raise SchemaError(
          f"feature '{self.name}': dtype '{self.dtype}' is not one of "
          f"{', '.join(_DTYPES)}")
    if (self.vocabulary_file is None) == (self.hash_buckets is None):
      raise SchemaError(
          f"feature '{self.name}': give exactly one of vocabulary_file and "
          "hash_buckets")
    if self.hash_buckets is not None and self.hash_buckets < 1:
      raise SchemaError(
          f"feature '{self.name}': hash_buckets must be >= 1, got "
          f"{self.hash_buckets}")

  @property
  def num_rows(self) -> int:
    """Rows of this feature's embedding table, the OOV row included."""
    if self.hash_buckets is not None:
      return self.hash_buckets
    if self.vocabulary_size is None:
      raise SchemaError(f"feature '{self.name}': vocabulary_size is missing")
    return self.vocabulary_size + 1


@dataclasses.dataclass(frozen=True)
class NumericFeature:
  """One numeric input column (a duration, a count): standardized, fed beside the embeddings.

  The model feeds z = (t(x) - mean) / std, with t the identity or, with
  `log1p`, sign(x) * log(1 + |x|) (for heavy-tailed counts); a missing value
  (NaN) or an infinite one feeds 0, the train mean. In shards a value is a
  float_list entry (NaN when missing); at serving, a [None] float32 tensor.

  Attributes:
    name: Column name in the shards and input name of the SavedModel.
    mean: Mean of t(x) over the train split's finite values.
    std: Their standard deviation (1 where it is 0: a constant column).
    log1p: Take the signed log first.
  """
  name: str
  mean: float = 0.0
  std: float = 1.0
  log1p: bool = False

  def __post_init__(self):
    if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
      raise SchemaError(f"numeric feature '{self.name}': mean must be finite and std finite "
                        f"and > 0, got {self.mean} and {self.std}")


def read_numbers(fields: Sequence) -> Tuple[np.ndarray, np.ndarray]:
  """Raw numeric fields as data_prep and `predict` both read them.

  Returns:
    (values [N] float32, NaN where missing; bad [N] bool): a blank field, or
    one that reads "nan", is missing; a number beyond float32, or an infinite
    one, is missing too (the model feeds such values as the train mean); any
    other field that is not a number is bad.
  """
  text = pd.Series(list(fields), dtype=object).astype(str).str.strip()
  with np.errstate(over="ignore"):
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64).astype(np.float32)
  missing = (text == "") | (text.str.lower() == "nan")
  bad = np.isnan(values) & ~missing.to_numpy()
  values[~np.isfinite(values)] = np.nan
  return values, bad


@dataclasses.dataclass
class Schema:
  """A prepared data set's description; see the module docstring.

  Attributes:
    features: Categorical input columns, in model input order.
    labels: Binary label columns; each one is a task, in this order.
    group_column: The feature that groups samples for gAUC (the user id).
    splits: Split name -> shard file names, relative to `directory`.
    rows_per_record: Most rows a shard record holds (see the module
      docstring); 1 for one row a record.
    directory: The directory holding schema.json (not serialized).
    numeric_features: Numeric input columns, after the categorical ones in
      model input order (none by default).
  """
  features: List[CategoricalFeature]
  labels: List[str]
  group_column: Optional[str] = None
  splits: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
  rows_per_record: int = 1
  directory: str = ""
  numeric_features: List[NumericFeature] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    names = [f.name for f in self.features]
    if not names:
      raise SchemaError("schema has no features")
    if not self.labels:
      raise SchemaError("schema has no labels (tasks)")
    columns = names + self.numeric_names + list(self.labels)
    check_column_names(columns)
    check_task_names(self.labels)
    duplicated = sorted({n for n in columns if columns.count(n) > 1})
    if duplicated:
      raise SchemaError(f"schema names these columns twice: {duplicated}")
    if self.group_column is not None and self.group_column not in names:
      raise SchemaError(
          f"group_column '{self.group_column}' is not one of the features "
          f"{names}")
    if self.group_column is not None and self.feature(self.group_column).multivalent:
      raise SchemaError(f"group_column '{self.group_column}' is multivalent: a row belongs to "
                        "one group (the user id)")
    if not isinstance(self.rows_per_record, int) or self.rows_per_record < 1:
      raise SchemaError(f"rows_per_record must be an integer >= 1, got {self.rows_per_record!r}")

  @property
  def feature_names(self) -> List[str]:
    """The categorical features' names."""
    return [f.name for f in self.features]

  @property
  def numeric_names(self) -> List[str]:
    return [f.name for f in self.numeric_features]

  @property
  def input_names(self) -> List[str]:
    """Every model input: the categorical features, then the numeric ones."""
    return self.feature_names + self.numeric_names

  @property
  def tasks(self) -> List[str]:
    return list(self.labels)

  def feature(self, name: str) -> CategoricalFeature:
    for f in self.features:
      if f.name == name:
        return f
    raise SchemaError(f"schema has no feature '{name}'")

  def path(self, relative: str) -> str:
    """Absolute path of a file named relative to the schema's directory."""
    return os.path.join(self.directory, relative)

  def check_paths_inside(self, schema_file: str) -> None:
    """A SchemaError unless every path the schema names lies inside its directory.

    Vocabulary files and shard names are resolved (symlinks included, with
    `os.path.realpath`) against `directory`: an absolute path, a `../` path or
    a symlink leading elsewhere would let a data set pull any file the
    process can read into an export's assets, or train on it.

    Args:
      schema_file: The schema.json the paths come from (for the message).
    """
    root = os.path.realpath(self.directory)
    named = [(f"feature '{f.name}'", "vocabulary file", f.vocabulary_file)
             for f in self.features if f.vocabulary_file is not None]
    named += [(f"split '{split}'", "shard", shard)
              for split, shards in self.splits.items() for shard in shards]
    for owner, kind, relative in named:
      if not isinstance(relative, str) or not relative:
        raise SchemaError(f"{schema_file}: {owner} names {kind} {relative!r}, not a path")
      resolved = os.path.realpath(os.path.join(root, relative))
      if os.path.commonpath([root, resolved]) != root:
        raise SchemaError(f"{schema_file}: {kind} '{relative}' of {owner} resolves to "
                          f"{resolved}, outside the data directory {root}: paths in "
                          f"{SCHEMA_FILE} must stay inside the data set's directory")

  def shard_paths(self, split: str) -> List[str]:
    """Absolute shard paths of `split`; a clear error if there are none."""
    if not self.splits.get(split):
      raise SchemaError(
          f"{os.path.join(self.directory, SCHEMA_FILE)} lists no shards for "
          f"split '{split}'")
    return [self.path(p) for p in self.splits[split]]

  def to_json(self) -> dict:
    out = {
        "version": 1,
        "features": [
            {k: v for k, v in dataclasses.asdict(f).items() if v is not None}
            for f in self.features
        ],
        "labels": list(self.labels),
        "group_column": self.group_column,
        "rows_per_record": self.rows_per_record,
        "splits": self.splits,
    }
    if self.numeric_features:  # absent when empty: such schemas read as before
      out["numeric_features"] = [dataclasses.asdict(f) for f in self.numeric_features]
    return out

  def save(self, directory: str) -> str:
    path = os.path.join(directory, SCHEMA_FILE)
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=2)
      f.write("\n")
    return path

  @classmethod
  def from_json(cls, data: dict, directory: str = "") -> "Schema":
    try:
      features = [CategoricalFeature(**f) for f in data["features"]]
      numeric = [NumericFeature(**f) for f in data.get("numeric_features", [])]
      return cls(features=features, labels=list(data["labels"]),
                 group_column=data.get("group_column"),
                 splits={k: list(v) for k, v in data.get("splits", {}).items()},
                 rows_per_record=data.get("rows_per_record", 1), directory=directory,
                 numeric_features=numeric)
    except (KeyError, TypeError) as e:
      raise SchemaError(f"malformed schema in {directory or 'JSON'}: {e!r}")

  @classmethod
  def load(cls, data_dir: str) -> "Schema":
    """Reads `<data_dir>/schema.json`.

    Raises:
      SchemaError: the file is missing, unreadable or inconsistent.
    """
    path = os.path.join(data_dir, SCHEMA_FILE)
    if not os.path.isfile(path):
      raise SchemaError(
          f"no {SCHEMA_FILE} in data directory '{data_dir}': prepare one with "
          "`python -m data_prep.synthetic --out DIR` (or another data_prep "
          "module)")
    try:
      with open(path) as f:
        data = json.load(f)
    except json.JSONDecodeError as e:
      raise SchemaError(f"{path} is not valid JSON: {e}")
    schema = cls.from_json(data, directory=os.path.abspath(data_dir))
    schema.check_paths_inside(path)
    for feature in schema.features:
      if feature.vocabulary_file and not os.path.isfile(
          schema.path(feature.vocabulary_file)):
        raise SchemaError(
            f"{path}: vocabulary file '{feature.vocabulary_file}' of feature "
            f"'{feature.name}' does not exist")
    return schema


def load_stats(data_dir: str) -> dict:
  """Reads `<data_dir>/stats.json` ({} if absent)."""
  path = os.path.join(data_dir, STATS_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)
