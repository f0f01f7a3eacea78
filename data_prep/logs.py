"""Your own logs -> prepared data set: delimited text files with a header line.

Run as

    python -m data_prep.logs --raw=logs/ --out=data/mine --features=user_id,item_id,tags \
        --tasks=click,like --group_column=user_id --multivalent=tags:'|'

(or `python main.py prepare --dataset=logs ...`).

Raw layout: `raw` is one file, a directory (its files in name order; names
starting with "." or "_", hidden files and markers such as Spark's _SUCCESS,
are skipped) or a glob pattern (`logs/part-*.csv`). Each file is delimited
text (`sep`, "," by default) whose first line names its columns; files may
order their columns differently and hold others, which are ignored. A
feature is categorical (an id, a bucket, a category): values seen fewer than
`min_count` times in the train split share the OOV row; a multivalent one
holds a list of values in one field, split on its separator. Numeric
columns (`numeric`, optionally `log1p`) are fed standardized beside the
embeddings (`stem_tfrs.data.schema.NumericFeature`).

The split is either random, seeded (`test_fraction` of all rows, then
`valid_fraction` of the rest), or by time: with `split_column`, a row whose
value is at or after `test_from` is test, at or after `valid_from` valid,
and train otherwise. Values are compared as numbers when both bounds are
numbers (a value that is not a number is then a bad row), and as text
otherwise, which orders dates written alike (20220507, 2022-05-07); an empty
value is a bad row.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.readers import BLOCK_BYTES
from data_prep.writer import (ROWS_PER_RECORD, BadRows, DataError, Layout, RandomSplit,
                              SplitRows, prepare_layout)

DEFAULT_MIN_COUNT = 5
DEFAULT_SEED = 42


@dataclasses.dataclass(frozen=True)
class TimeSplit:
  """Split on `column`: >= test_from -> test, >= valid_from -> valid, else train.

  A split by value: `assign` places each row by its own value, whatever block
  it arrives in (see `data_prep.writer.prepare` for the protocol); rows it
  cannot place are bad rows (`unplaceable`).
  """
  column: str
  valid_from: str
  test_from: str

  def __post_init__(self):
    if _is_number(self.valid_from) != _is_number(self.test_from):
      raise DataError(f"--valid_from={self.valid_from} and --test_from={self.test_from} must "
                      "both be numbers or both be text")
    if self._key(self.valid_from) > self._key(self.test_from):
      raise DataError(f"--valid_from={self.valid_from} is after --test_from={self.test_from}: "
                      "validation comes before test")

  @property
  def numeric(self) -> bool:
    """Whether values are compared as numbers (both bounds are numbers)."""
    return _is_number(self.valid_from) and _is_number(self.test_from)

  def _key(self, value: str):
    return float(value) if self.numeric else value

  def _numbers(self, table: pa.Table) -> np.ndarray:
    """The column as float64, NaN where it is not a number (as pandas reads numbers)."""
    return pd.to_numeric(table[self.column].to_pandas(), errors="coerce").to_numpy(
        dtype=np.float64)

  def unplaceable(self, table: pa.Table) -> Tuple[np.ndarray, str, str, str]:
    """Rows the split cannot place: (mask, bad-row kind, column, what is wrong)."""
    if self.numeric:
      return np.isnan(self._numbers(table)), "unparsable number", self.column, "is not a number"
    empty = pc.equal(table[self.column], "").to_numpy(zero_copy_only=False)
    return empty, "missing split value", self.column, "is empty"

  def assign(self, rows: SplitRows) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test)."""
    if self.numeric:
      values = self._numbers(rows.table)
      return np.where(values >= float(self.test_from), 2,
                      np.where(values >= float(self.valid_from), 1, 0))
    values = rows.table[self.column]  # compared as UTF-8 bytes: Python's order of the text
    test = pc.greater_equal(values, self.test_from).to_numpy(zero_copy_only=False)
    valid = pc.greater_equal(values, self.valid_from).to_numpy(zero_copy_only=False)
    return np.where(test, 2, np.where(valid, 1, 0))


def _is_number(text: str) -> bool:
  """Whether `text` reads as a float ("20240101", "-1.5", "1e3")."""
  try:
    float(text)
  except (TypeError, ValueError):
    return False
  return True


def raw_files(raw: str) -> List[str]:
  """The files `raw` names: itself, a directory's files (name order), or a glob's matches."""
  if os.path.isdir(raw):
    # Hidden files and Hadoop's or Spark's markers (_SUCCESS, _committed_...) are not logs.
    files = sorted(os.path.join(raw, name) for name in os.listdir(raw)
                   if not name.startswith((".", "_")) and os.path.isfile(os.path.join(raw, name)))
    if not files:
      raise DataError(f"--raw {raw} is a directory without files")
    return files
  if glob.has_magic(raw):
    files = sorted(path for path in glob.glob(raw) if os.path.isfile(path))
    if not files:
      raise DataError(f"--raw {raw} matches no file")
    return files
  return [raw]  # read_delimited says if it is missing or empty


#: Separators a flag cannot spell as themselves: --multivalent is comma-separated, and a
#: shell passes a tab with difficulty.
SEPARATOR_NAMES = {"comma": ",", "tab": "\t", "\\t": "\t", "space": " ", "semicolon": ";"}


def separator(text: str) -> str:
  """A separator as a flag gives it: itself, or one of `SEPARATOR_NAMES` ("tab", "\\t", ...)."""
  return SEPARATOR_NAMES.get(text, text)


def parse_multivalent(specs: Sequence[str]) -> Dict[str, str]:
  """["tags:|", "genres:comma"] -> {"tags": "|", "genres": ","} (see `separator`)."""
  multivalent = {}
  for spec in specs:
    name, colon, value = spec.partition(":")
    if not colon or not name or not value:
      raise DataError(f"--multivalent takes feature:separator items (tags:|, tags:comma), "
                      f"got '{spec}'")
    multivalent[name] = separator(value)
  return multivalent


def prepare_logs(raw: str, out_dir: str, *, features: Sequence[str], tasks: Sequence[str],
                 group_column: Optional[str] = None, sep: str = ",",
                 multivalent: Optional[Dict[str, str]] = None,
                 numeric: Sequence[str] = (), log1p: Sequence[str] = (),
                 split_column: Optional[str] = None, valid_from: Optional[str] = None,
                 test_from: Optional[str] = None, test_fraction: float = 0.1,
                 valid_fraction: float = 0.1, min_count: int = DEFAULT_MIN_COUNT,
                 seed: int = DEFAULT_SEED, bad_rows: Optional[BadRows] = None,
                 overwrite: bool = False, block_bytes: int = BLOCK_BYTES,
                 rows_per_record: int = ROWS_PER_RECORD,
                 processes: Optional[int] = None) -> dict:
  """Prepares the logs `raw` names in `out_dir`; returns the stats.

  Args:
    raw: A file, a directory of files, or a glob pattern (see the module docstring).
    out_dir: Destination directory.
    features: Categorical columns, in model input order.
    tasks: 0/1 label columns, one per task.
    group_column: The feature that groups rows for gAUC (the user id), if any.
    sep: Field separator ("," or "\\t" ...).
    multivalent: Feature -> separator of its values in one field.
    numeric: Numeric columns (durations, counts), standardized with the
      train split's mean and std; an empty field is missing.
    log1p: Those of `numeric` to take the signed log of first (counts).
    split_column, valid_from, test_from: A split by time (all three, or none).
    test_fraction, valid_fraction: The random split, without `split_column`.
    min_count, seed, bad_rows, overwrite, rows_per_record, processes: As
      for the other loaders (`data_prep.writer.prepare`).
    block_bytes: Bytes of text read at a time (`data_prep.readers.read_blocks`);
      the data set does not depend on it.

  Raises:
    DataError: what is missing or wrong, in one line; nothing is written.
  """
  made = layout(raw, features=features, tasks=tasks, group_column=group_column, sep=sep,
                multivalent=multivalent, numeric=numeric, log1p=log1p,
                split_column=split_column, valid_from=valid_from, test_from=test_from,
                test_fraction=test_fraction, valid_fraction=valid_fraction,
                min_count=min_count, seed=seed, rows_per_record=rows_per_record,
                block_bytes=block_bytes)
  return prepare_layout(made, out_dir, bad_rows=bad_rows, overwrite=overwrite,
                        processes=processes)


def layout(raw: str, *, features: Sequence[str], tasks: Sequence[str],
           group_column: Optional[str] = None, sep: str = ",",
           multivalent: Optional[Dict[str, str]] = None, numeric: Sequence[str] = (),
           log1p: Sequence[str] = (), split_column: Optional[str] = None,
           valid_from: Optional[str] = None, test_from: Optional[str] = None,
           test_fraction: float = 0.1, valid_fraction: float = 0.1,
           min_count: int = DEFAULT_MIN_COUNT, seed: int = DEFAULT_SEED,
           rows_per_record: int = ROWS_PER_RECORD, block_bytes: Optional[int] = None) -> Layout:
  """The layout of the logs `raw` names, `prepare_logs`' arguments checked (the local path
  and data_prep.beam read it).

  Raises:
    DataError: what is missing or wrong, in one line.
  """
  features, tasks = list(features or []), list(tasks or [])
  multivalent = dict(multivalent or {})
  _check_columns(features, tasks, group_column, multivalent, sep)
  split = _split(split_column, valid_from, test_from, test_fraction, valid_fraction)
  files = raw_files(raw)
  numeric = list(numeric or [])
  required = list(dict.fromkeys(features + numeric + tasks
                                + ([split_column] if split_column else [])))
  listed = files if files != [raw] else raw  # a file named itself: refused if empty
  return Layout(listed, sep, None, required, features, tasks, group_column, split,
                multivalent=multivalent, numeric=numeric, log1p=list(log1p or []),
                inputs=[raw, *files], min_count=min_count, seed=seed,
                rows_per_record=rows_per_record, block_bytes=block_bytes)


def _check_columns(features: List[str], tasks: List[str], group_column: Optional[str],
                   multivalent: Dict[str, str], sep: str) -> None:
  """`layout`'s columns and separators checked: features and tasks given, the group column
  and the multivalent ones among the features, list separators apart from `sep`.

  Raises:
    DataError: the first that is wrong, in one line.
  """
  if not features:
    raise DataError("--features is required: the categorical columns to embed")
  if not tasks:
    raise DataError("--tasks is required: the 0/1 label columns, one per task")
  if group_column is not None and group_column not in features:
    raise DataError(f"--group_column={group_column} must be one of --features {features}")
  unknown = sorted(set(multivalent) - set(features))
  if unknown:
    raise DataError(f"--multivalent names {unknown}, which are not among --features {features}")
  if not sep:
    raise DataError("--sep must not be empty")
  clash = sorted(name for name, value in multivalent.items() if value in sep or sep in value)
  if clash:
    raise DataError(f"the list separator of {clash} overlaps the field separator {sep!r}: "
                    "a list is one field, its values split inside it")


def _split(split_column: Optional[str], valid_from: Optional[str], test_from: Optional[str],
           test_fraction: float, valid_fraction: float):
  """`layout`'s split: by time (`TimeSplit`) with `split_column`, else at random
  (`RandomSplit`).

  Raises:
    DataError: a split by time given in part, or a fraction outside [0, 1).
  """
  time_split = [split_column, valid_from, test_from]
  if any(v is not None for v in time_split) and not all(v is not None for v in time_split):
    raise DataError("a split by time takes --split_column, --valid_from and --test_from together")
  if split_column is not None:
    return TimeSplit(split_column, str(valid_from), str(test_from))
  if not (0.0 <= test_fraction < 1.0 and 0.0 <= valid_fraction < 1.0):
    raise DataError(f"--test_fraction and --valid_fraction must be in [0, 1), got "
                    f"{test_fraction} and {valid_fraction}")
  return RandomSplit(test=test_fraction, valid_of_rest=valid_fraction)


if __name__ == "__main__":
  from data_prep import cli
  cli.run_module("logs")
