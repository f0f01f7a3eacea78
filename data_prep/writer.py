"""Raw rows -> prepared data set: split, vocabularies, TFRecord shards, schema.json, stats.json.

Every data_prep module reduces its raw layout to a stream of pandas chunks
(`Chunk`: the rows plus where they came from) and hands it to `prepare`, which
makes two passes over the stream and never holds more than one chunk:

1. validate each chunk (columns; a label that is not 0 or 1 makes a bad row,
   skipped and reported, or an error in strict mode), count the usable rows
   and every feature value (on the train split with `RandomSplit`, on all
   rows with `ExactSplit`, whose exact sizes need the row count first);
2. write the vocabularies (values seen at least `min_count` times, most
   frequent first; the rest share the OOV row), then assign each row its
   split and a shard of it (round robin), and write each shard's rows as
   `tf.train.Example` blocks of `rows_per_record` rows of raw values,
   counting rows and positives per split.

The data set is written to a hidden temporary sibling of `out_dir`, named after
the process that writes it (`stem_tfrs.files.temp_prefix`; a later run removes
those of killed runs), and renamed into place only when complete, so a failed
run (a full disk included: one error naming `out_dir`) leaves nothing that
training could mistake for a prepared data set. An existing `out_dir` is
replaced only when asked to, and only if it is a prepared data set holding
none of the raw inputs (`check_out`): never a file, the working directory or a
directory above it.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf

from stem_tfrs.errors import first_line
from stem_tfrs.files import remove_abandoned, temp_prefix, write_json
from stem_tfrs.schema import (SHARD_BYTES, SPLITS, STATS_FILE, CategoricalFeature,
                              NumericFeature, Schema, check_column_names, check_task_names,
                              read_numbers, row_lengths_key)

BAD_ROWS_FILE = "bad_rows.json"
#: Rows a shard record holds by default: tf.data and the parser pay per record (stem_tfrs.schema).
ROWS_PER_RECORD = 64


class DataError(ValueError):
  """The raw data is unusable; the message says what and where."""


def check_tasks(dataset: str, tasks: Sequence[str], label_columns: Sequence[str]) -> List[str]:
  """`tasks` as a list, if each is one of the data set's 0/1 `label_columns`."""
  tasks = list(tasks)
  unknown = [t for t in tasks if t not in label_columns]
  if unknown:
    raise DataError(f"{dataset} has no label column(s) {unknown}; choose from "
                    f"{', '.join(label_columns)}")
  return tasks


EXAMPLES_PER_KIND = 5


class BadRows:
  """Counts malformed rows per kind and keeps the earliest few of each, with file and line.

  Earliest: by file (in the order files first report a bad row), then line,
  whichever column or reader reports a row, and in whatever order.

  Bad rows are skipped; in strict mode the first one raises `DataError`
  instead. The writer reads its input twice, and counts during the first pass
  only (`freeze()` after it).
  """

  def __init__(self, strict: bool = False):
    self.strict = strict
    self.counts: Dict[str, int] = collections.Counter()
    self.examples: Dict[str, List[str]] = collections.defaultdict(list)
    self._example_lines: Dict[str, List[Tuple[int, int]]] = collections.defaultdict(list)
    self._sources: Dict[str, int] = {}
    self._frozen = False

  def add(self, kind: str, source: str, line: int, detail: str) -> None:
    where = f"{source} line {line:,}: {detail}"
    if self.strict:
      raise DataError(f"{kind}: {where} (without --strict, bad rows are skipped)")
    if self._frozen:
      return
    self.counts[kind] += 1
    self._keep_example(kind, (self._sources.setdefault(source, len(self._sources)), line), where)

  def _keep_example(self, kind: str, key: Tuple[int, int], where: str) -> None:
    """Keeps `where` among the `EXAMPLES_PER_KIND` earliest of `kind`, by (file, line) `key`."""
    keys, examples = self._example_lines[kind], self.examples[kind]
    at = bisect.bisect_right(keys, key)
    if at < EXAMPLES_PER_KIND:
      keys.insert(at, key)
      examples.insert(at, where)
      del keys[EXAMPLES_PER_KIND:], examples[EXAMPLES_PER_KIND:]

  def freeze(self) -> None:
    self._frozen = True

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def to_json(self) -> dict:
    return {"total": self.total,
            "by_kind": {k: {"rows": n, "first": self.examples[k]} for k, n in self.counts.items()}}

  def first(self) -> str:
    """The earliest bad row of the most common kind, as "kind: where"."""
    kind = max(self.counts, key=self.counts.get)
    return f"{kind}: {self.examples[kind][0]}"

  def summary(self) -> str:
    """One line per kind, for the command line."""
    if not self.total:
      return "no bad rows"
    return "\n".join([f"skipped {self.total:,} bad row(s):"] + [
        f"  {kind}: {n:,} (first: {self.examples[kind][0]})" for kind, n in self.counts.items()])


@dataclasses.dataclass
class Chunk:
  """A block of raw rows.

  Attributes:
    frame: The rows, one column per raw column (at least the features and
      labels); its index holds each row's line number in `source`.
    source: Where they came from (a file path, or a generator's name).
  """
  frame: pd.DataFrame
  source: str


@dataclasses.dataclass(frozen=True)
class _FractionSplit:
  """A split by fractions: `test` of all rows, then `valid_of_rest` of the rest."""
  test: float = 0.1
  valid_of_rest: float = 0.1

  def expects_rows(self, split: int) -> bool:
    """Whether split `split` (0 train, 1 valid, 2 test) should get rows: not at fraction 0."""
    return (1.0 - self.test, self.valid_of_rest, self.test)[split] > 0


@dataclasses.dataclass(frozen=True)
class RandomSplit(_FractionSplit):
  """Each row draws its split: `test` of all rows, then `valid` of the rest.

  Draws are seeded per chunk, so both passes agree, and the vocabularies are
  counted on the train split alone. Split sizes vary around their fractions.
  """
  vocabulary_from_train = True

  def assigner(self, total_rows: Optional[int], seed: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function: next chunk's rows -> split index per row (0 train, 1 valid, 2 test)."""
    chunk_index = itertools.count()
    valid_end = self.test + (1.0 - self.test) * self.valid_of_rest

    def assign(frame: pd.DataFrame) -> np.ndarray:
      draws = np.random.default_rng([seed, next(chunk_index)]).random(len(frame))
      return np.where(draws < self.test, 2, np.where(draws < valid_end, 1, 0))
    return assign


@dataclasses.dataclass(frozen=True)
class ExactSplit(_FractionSplit):
  """Exact split sizes, as scikit-learn's `train_test_split` applied twice gives them.

  test = ceil(test * N) rows, then valid = ceil(valid_of_rest * (N - test)),
  drawn uniformly at random without replacement while streaming (a
  hypergeometric draw per chunk). The sizes need N, known only after the
  first pass, so the vocabularies are counted on all rows, as the STEM-Net
  authors' preprocessing did before splitting.
  """
  vocabulary_from_train = False

  def sizes(self, total_rows: int) -> Tuple[int, int, int]:
    """(train, valid, test) row counts."""
    test = math.ceil(self.test * total_rows)
    valid = math.ceil(self.valid_of_rest * (total_rows - test))
    return total_rows - test - valid, valid, test

  def assigner(self, total_rows: Optional[int], seed: int) -> Callable[[pd.DataFrame], np.ndarray]:
    rng = np.random.default_rng(seed)
    left = {"rows": total_rows}
    left["train"], left["valid"], left["test"] = self.sizes(total_rows)

    def assign(frame: pd.DataFrame) -> np.ndarray:
      n = len(frame)
      out = np.zeros(n, dtype=np.int64)
      n_test = rng.hypergeometric(left["test"], left["rows"] - left["test"], n) if n else 0
      test_rows = rng.choice(n, n_test, replace=False)
      out[test_rows] = 2
      rest = np.flatnonzero(out == 0)
      others = left["rows"] - left["test"]
      n_valid = (rng.hypergeometric(left["valid"], others - left["valid"], len(rest))
                 if len(rest) else 0)
      out[rng.choice(rest, n_valid, replace=False)] = 1
      left["rows"] -= n
      left["test"] -= n_test
      left["valid"] -= n_valid
      return out
    return assign


def prepare(read_chunks: Callable[[], Iterable[Chunk]], *, features: Sequence[str],
            labels: Sequence[str], group_column: Optional[str], out_dir: str,
            min_count: int = 1, seed: int = 42, split=RandomSplit(),
            num_shards: Optional[Dict[str, int]] = None, overwrite: bool = False,
            bad_rows: Optional[BadRows] = None,
            multivalent: Optional[Dict[str, str]] = None,
            rows_per_record: int = ROWS_PER_RECORD, numeric: Sequence[str] = (),
            log1p: Sequence[str] = (), inputs: Sequence[str] = ()) -> dict:
  """Writes a prepared data set to `out_dir` and returns its stats.

  Args:
    read_chunks: Called once per pass; yields the raw rows as `Chunk`s, the
      same rows in the same chunks each time.
    features: Categorical columns to keep, in model input order.
    labels: 0/1 label columns, one per task.
    group_column: The feature that groups rows for gAUC (the user id).
    out_dir: Destination directory; must not exist unless `overwrite`, and
      then be a prepared data set that `check_out` lets it replace.
    min_count: Values seen fewer times map to the OOV row.
    seed: Seed of the split.
    split: `RandomSplit` (vocabularies from train), `ExactSplit`, or any
      object with `vocabulary_from_train` and `assigner(total_rows, seed)`
      returning a function of a chunk's rows -> split index per row
      (0 train, 1 valid, 2 test); `total_rows` is None in the first pass.
      A split left without rows is an error, unless the object's
      `expects_rows(split index)` says so (a fraction of 0).
    num_shards: Shards per split (default train 8, valid 2, test 2).
    overwrite: Replace an existing `out_dir` (a prepared data set only).
    bad_rows: Collects rows with a label that is not 0 or 1 (skipped), or,
      if strict, raises on the first; the readers report theirs here too.
      Written to `bad_rows.json` beside the data.
    multivalent: Feature -> separator, for features holding a list of values
      in one raw field ("Action|Comedy"); an empty field is an empty list.
    rows_per_record: Rows a shard record holds, consecutive rows of a shard
      (see stem_tfrs.schema); 1 writes one row a record.
    numeric: Numeric columns to keep, after the categorical ones (see
      `stem_tfrs.schema.NumericFeature`). An empty field is a missing value
      (NaN in the shards), a field that is not a number a bad row; their
      mean and std are measured where the vocabularies are counted.
    log1p: Those of `numeric` the model takes the signed log of first.
    inputs: The raw files and directories `read_chunks` reads: `out_dir`
      may not be or hold any of them.

  Returns:
    The stats written to stats.json.

  Raises:
    DataError: a missing column, a bad row in strict mode, no rows at all,
      or a split without rows.
    SchemaError: a column name that cannot name a SavedModel input, or a
      reserved task name.
    FileExistsError: `out_dir` exists and `overwrite` is False, or it may not
      be replaced (see `check_out`).
    OSError: the data set could not be written (a full disk): one line
      naming `out_dir` and the cause; nothing is left of it.
  """
  features, labels, numeric = list(features), list(labels), list(numeric)
  multivalent = dict(multivalent or {})
  _check_columns(features, numeric, labels, group_column, multivalent, log1p)
  num_shards = {"train": 8, "valid": 2, "test": 2, **(num_shards or {})}
  bad_rows = bad_rows if bad_rows is not None else BadRows(strict=True)
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  if rows_per_record < 1:
    raise ValueError(f"rows_per_record must be >= 1, got {rows_per_record}")
  out_dir = check_out(out_dir, overwrite, inputs)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  for kind in ("tmp", "old"):  # those of killed runs (temp_prefix names the process)
    remove_abandoned(parent, f".{os.path.basename(out_dir)}.{kind}-")

  counts = {name: collections.Counter() for name in features}
  moments = {name: _Moments() for name in numeric}
  total = 0
  assign = split.assigner(None, seed) if split.vocabulary_from_train else None
  for frame in _valid_rows(read_chunks, features, labels, bad_rows, numeric):
    total += len(frame)
    counted = frame[assign(frame) == 0] if assign else frame
    for name in numeric:
      moments[name].add(_signed_log(counted[name]) if name in log1p else counted[name])
    for name in features:
      values = counted[name]
      if name in multivalent:
        values = values[values != ""].str.split(multivalent[name], regex=False).explode()
      counts[name].update(values.value_counts(sort=False).to_dict())
  bad_rows.freeze()
  empty = [name for name in features
           if not any(c >= min_count and v != "" for v, c in counts[name].items())]
  if total and empty:
    raise DataError(f"no value of feature(s) {empty} is seen min_count={min_count} times "
                    f"(in the train split where the split says so): lower --min_count, or "
                    "drop the feature")
  flat = [name for name in numeric if not moments[name].varies()]
  if total and flat:
    raise DataError(f"numeric feature(s) {flat} hold no value, or a single one, where the "
                    "statistics are measured (the train split where the split says so): the "
                    "model could not learn from them; drop them")
  if total == 0:
    raise DataError("the raw input holds no usable rows" +
                    (f" ({bad_rows.total:,} bad rows skipped; first {bad_rows.first()})"
                     if bad_rows.total else ""))

  tmp = None
  try:
    with _writing():
      tmp = _temporary_sibling(out_dir)
      schema_features = _write_vocabularies(tmp, counts, min_count, multivalent)
    shard_files, rows, positives = _write_shards(
        tmp, _valid_rows(read_chunks, features, labels, bad_rows, numeric), features, labels,
        split.assigner(total, seed), num_shards, multivalent, rows_per_record, numeric)
    expects_rows = getattr(split, "expects_rows", lambda s: True)
    empty = [name for s, name in enumerate(SPLITS) if not rows[s] and expects_rows(s)]
    if empty:
      raise DataError(f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would "
                      f"be empty: none of the {total:,} usable rows falls in "
                      f"{'them' if len(empty) > 1 else 'it'} under {split}")
    schema = Schema(features=schema_features, labels=labels, group_column=group_column,
                    splits=shard_files, rows_per_record=rows_per_record, directory=tmp,
                    numeric_features=[NumericFeature(name, *moments[name].mean_and_std(),
                                                     log1p=name in log1p)
                                      for name in numeric])
    stats = {
        name: {"rows": int(rows[s]),
               "positive_rate": {task: float(positives[s, t] / max(rows[s], 1))
                                 for t, task in enumerate(labels)},
               # What a shard cut short by a copy or a full disk no longer holds: checked in
               # O(1) a shard before training reads it (stem_tfrs.data.validate_shards).
               SHARD_BYTES: {n: os.path.getsize(os.path.join(tmp, n)) for n in shard_files[name]}}
        for s, name in enumerate(SPLITS)}
    with _writing():
      schema.save(tmp)
      for name, content in ((STATS_FILE, stats), (BAD_ROWS_FILE, bad_rows.to_json())):
        write_json(os.path.join(tmp, name), content)
    check_out(out_dir, overwrite, inputs)  # again: what is there now is what is replaced
    with _writing():
      _replace_dir(tmp, out_dir)
  except BaseException as e:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, _WriteFailed):
      raise OSError(f"cannot write {out_dir}: {e}") from None
    raise
  return stats


def check_out(out_dir: str, overwrite: bool, inputs: Sequence[str] = ()) -> str:
  """`out_dir` as an absolute path, if `prepare` may write it; a one-line error otherwise.

  A path that does not exist may be written. An existing one is replaced only
  with `overwrite`, and only if it is a prepared data set (a directory whose
  schema.json reads as ours) that is neither the working directory nor above
  it, and holds none of the raw `inputs` (files or directories). Loaders that
  read their input before calling `prepare` call this first.

  Raises:
    FileExistsError: `out_dir` exists and may not be replaced; the message
      names it and says why.
  """
  out_dir = os.path.abspath(out_dir)
  if not os.path.lexists(out_dir):
    return out_dir
  why = _why_not_replaced(out_dir, inputs)
  if why:
    raise FileExistsError(f"--out {out_dir}: {why}, so it is never replaced; choose another "
                          "--out")
  if not overwrite:
    raise FileExistsError(f"--out {out_dir} already exists; pass --overwrite to replace it")
  return out_dir


def _why_not_replaced(out_dir: str, inputs: Sequence[str]) -> Optional[str]:
  """Why the existing `out_dir` is not a data set `prepare` may replace, or None."""
  if not os.path.isdir(out_dir):
    return "is a file, not a directory" if os.path.isfile(out_dir) else "is not a directory"
  real = os.path.realpath(out_dir)

  def relation(path: str) -> Optional[str]:
    path = os.path.realpath(path)
    if path == real:
      return "is"
    return "holds" if path.startswith(real.rstrip(os.sep) + os.sep) else None

  if relation(os.getcwd()):
    return f"{relation(os.getcwd())} the working directory"
  for path in inputs:
    if relation(path):
      return f"{relation(path)} the raw input {path}"
  try:
    Schema.load(out_dir)
  except Exception:  # pylint: disable=broad-except; whatever does not read as ours is not ours
    return "is not a prepared data set (it holds no schema.json of ours)"
  return None


def _temporary_sibling(out_dir: str) -> str:
  """A new hidden directory beside `out_dir`, named after this process (`temp_prefix`)."""
  tmp = tempfile.mkdtemp(prefix=temp_prefix(f".{os.path.basename(out_dir)}.tmp-"),
                         dir=os.path.dirname(out_dir))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the data set is not
  return tmp


class _WriteFailed(Exception):
  """Writing the data set failed (a full disk, a file size limit); the message is the cause."""


@contextlib.contextmanager
def _writing():
  """Turns a failed write inside (TensorFlow's or Python's) into `_WriteFailed`."""
  try:
    yield
  except tf.errors.OpError as e:  # "<path>; No space left on device"
    raise _WriteFailed(first_line(e.message).rsplit("; ", 1)[-1]) from None
  except OSError as e:
    raise _WriteFailed(e.strerror or str(e)) from None


def _check_columns(features, numeric, labels, group_column, multivalent, log1p) -> None:
  """A one-line error for column lists that cannot make a data set, before reading a row."""
  check_column_names(features + numeric + labels)
  check_task_names(labels)
  columns = features + numeric + labels
  repeated = sorted({c for c in columns if columns.count(c) > 1})
  if repeated:
    raise DataError(f"column(s) {repeated} named more than once among the features, numeric "
                    "features and tasks: each column is one of them, once")
  if sorted(set(log1p) - set(numeric)):
    raise DataError(f"log1p names {sorted(set(log1p) - set(numeric))}, which are not numeric "
                    f"features {numeric}")
  if group_column is not None and group_column not in features:
    raise DataError(f"group column '{group_column}' is not one of the features {features}")
  if group_column in multivalent:
    raise DataError(f"group column '{group_column}' is multivalent: a row belongs to one group "
                    "(the user id)")


def _valid_rows(read_chunks, features, labels, bad_rows: BadRows,
                numeric: Sequence[str] = ()) -> Iterator[pd.DataFrame]:
  """Yields each chunk's usable rows: labels as int64 0/1, features as strings,
  numeric columns as float64 (NaN where missing or not finite).

  A row's first bad value makes it a bad row; bad rows are reported in line
  order, whichever column holds them (so strict mode stops at the earliest).
  """
  for chunk in read_chunks():
    frame = chunk.frame
    missing = [c for c in features + list(numeric) + labels if c not in frame.columns]
    if missing:
      raise DataError(
          f"{chunk.source}: missing column(s) {missing}; found {list(frame.columns)}")
    problems: Dict[int, Tuple[str, str]] = {}  # row position -> (kind, detail), the first
    label_values = {label: _read_label(frame[label], label, problems) for label in labels}
    numbers = {name: _read_numeric(frame[name], name, problems) for name in numeric}
    for row in sorted(problems):
      kind, detail = problems[row]
      bad_rows.add(kind, chunk.source, int(frame.index[row]), detail)
    keep = np.ones(len(frame), dtype=bool)
    keep[list(problems)] = False
    frame = frame[keep].copy()
    for name in numeric:
      frame[name] = numbers[name][keep]
    for label in labels:
      frame[label] = label_values[label][keep]
    for name in features:
      frame[name] = _as_python_strings(frame[name])
    yield frame


def _read_label(column: pd.Series, label: str,
                problems: Dict[int, Tuple[str, str]]) -> np.ndarray:
  """A label column as int64 0/1; a row holding anything else goes to `problems`."""
  values = column.isin([1, "1"]).to_numpy().astype(np.int64)
  for row in np.flatnonzero(~column.isin([0, 1, "0", "1"]).to_numpy()):  # the slow path
    number = pd.to_numeric(pd.Series([column.iloc[row]]), errors="coerce").iloc[0]
    if number in (0, 1):  # "1.0", 0.0, ...
      values[row] = int(number)
    else:
      kind = "unparsable number" if pd.isna(number) else "label outside {0, 1}"
      problems.setdefault(int(row), (kind, f"column '{label}': '{column.iloc[row]}' is not 0 "
                                           "or 1"))
  return values


def _read_numeric(column: pd.Series, name: str,
                  problems: Dict[int, Tuple[str, str]]) -> np.ndarray:
  """A numeric column as float64 (NaN where missing or beyond float32); a row holding
  something that is not a number goes to `problems`."""
  values, bad = read_numbers(column)
  for row in np.flatnonzero(bad):
    problems.setdefault(int(row), ("unparsable number",
                                   f"column '{name}': '{column.iloc[row]}' is not a number"))
  return values.astype(np.float64)


def _as_python_strings(column: pd.Series) -> pd.Series:
  """An object column of str, missing values as "" (pandas' own string dtype is slower)."""
  column = column.astype(object).where(column.notna(), "")
  if pd.api.types.infer_dtype(column, skipna=False) not in ("string", "empty"):
    column = column.map(str)
  return column


def _write_vocabularies(out_dir: str, counts: Dict[str, collections.Counter],
                        min_count: int, multivalent: Dict[str, str]) -> List[CategoricalFeature]:
  os.makedirs(os.path.join(out_dir, "vocab"))
  schema_features = []
  for name, counter in counts.items():
    # "" is a missing value: it shares the OOV row (and a vocabulary file
    # cannot hold an empty line).
    kept = sorted((v for v, c in counter.items() if c >= min_count and v != ""),
                  key=lambda v: (-counter[v], v))
    broken = next((v for v in kept if "\n" in v or "\r" in v), None)
    if broken is not None:
      raise DataError(f"column '{name}': the value {broken!r} holds a line break")
    path = os.path.join("vocab", f"{name}.txt")
    with open(os.path.join(out_dir, path), "w", encoding="utf-8") as f:
      f.writelines(f"{v}\n" for v in kept)
    schema_features.append(CategoricalFeature(
        name=name, dtype="string", vocabulary_file=path, vocabulary_size=len(kept),
        multivalent=name in multivalent))
  return schema_features


class _Moments:
  """Count, mean and sum of squared deviations of a numeric column's finite values, chunk by
  chunk (Chan et al.'s pairwise update: no cancellation on large means)."""

  def __init__(self):
    self.count, self.mean, self.m2 = 0, 0.0, 0.0

  def add(self, values: pd.Series) -> None:
    values = values.to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
      return
    count, mean = len(values), float(values.mean())
    m2 = float(((values - mean) ** 2).sum())
    total = self.count + count
    delta = mean - self.mean
    self.mean += delta * count / total
    self.m2 += m2 + delta * delta * self.count * count / total
    self.count = total

  def varies(self) -> bool:
    """Whether the values are not all one (and there are some)."""
    return self.count > 1 and self.m2 > 0

  def mean_and_std(self) -> Tuple[float, float]:
    """(mean, population std) of the values; the std of values that do not vary is 0."""
    return self.mean, math.sqrt(self.m2 / self.count) if self.count else 0.0


def _signed_log(values: pd.Series) -> pd.Series:
  """sign(x) * log(1 + |x|), as `stem_tfrs.layers.NumericInputs` takes it."""
  return np.sign(values) * np.log1p(np.abs(values))


class _ShardWriter:
  """Writes rows to one TFRecord shard, `rows_per_record` rows a record (see stem_tfrs.schema)."""

  def __init__(self, path: str, features: Sequence[str], labels: Sequence[str],
               multivalent: Dict[str, str], rows_per_record: int, numeric: Sequence[str] = ()):
    with _writing():
      self._writer = tf.io.TFRecordWriter(path)
    self._lists = [n for n in features if n in multivalent]
    self._bytes = [n for n in features if n not in multivalent]
    self._floats = list(numeric)
    self._labels = list(labels)
    self._rows_per_record = rows_per_record
    self._pending = {n: [] for n in list(features) + self._floats + self._labels}

  def write(self, columns: Dict[str, list]) -> None:
    """Appends rows: column name -> one value (a list of bytes if multivalent) per row."""
    for name, values in columns.items():
      self._pending[name].extend(values)
    rows = len(self._pending[self._labels[0]])
    full = rows - rows % self._rows_per_record
    for start in range(0, full, self._rows_per_record):
      self._write_record({name: values[start:start + self._rows_per_record]
                          for name, values in self._pending.items()})
    self._pending = {name: values[full:] for name, values in self._pending.items()}

  def close(self) -> None:
    """Writes the rows left and closes the file (also when writing them fails)."""
    try:
      if self._pending[self._labels[0]]:
        self._write_record(self._pending)
    finally:
      with _writing():
        self._writer.close()

  def _write_record(self, taken: Dict[str, list]) -> None:
    example = tf.train.Example()
    feature = example.features.feature
    for name in self._bytes:
      feature[name].bytes_list.value.extend(taken[name])
    for name in self._lists:
      feature[name].bytes_list.SetInParent()
      feature[name].bytes_list.value.extend(itertools.chain.from_iterable(taken[name]))
      if self._rows_per_record > 1:
        feature[row_lengths_key(name)].int64_list.value.extend(map(len, taken[name]))
    for name in self._floats:
      feature[name].float_list.value.extend(taken[name])
    for name in self._labels:
      feature[name].int64_list.value.extend(taken[name])
    # Deterministic: the same rows give the same bytes in every process.
    with _writing():
      self._writer.write(example.SerializeToString(deterministic=True))


def _write_shards(out_dir, frames, features, labels, assign, num_shards, multivalent,
                  rows_per_record, numeric=()):
  """Writes every row to its split's shards (round robin); returns names, rows, positives."""
  names = {s: [f"{s}-{i:05d}-of-{num_shards[s]:05d}.tfrecord"
               for i in range(num_shards[s])] for s in SPLITS}
  writers = [[_ShardWriter(os.path.join(out_dir, n), features, labels, multivalent,
                           rows_per_record, numeric) for n in names[s]] for s in SPLITS]
  rows = np.zeros(len(SPLITS), dtype=np.int64)
  positives = np.zeros((len(SPLITS), len(labels)), dtype=np.int64)
  try:
    for frame in frames:
      splits = assign(frame)
      for s in range(len(SPLITS)):
        positives[s] += frame.loc[splits == s, labels].to_numpy().sum(axis=0)
      columns = {n: np.array([v.encode("utf-8") for v in frame[n]], dtype=object)
                 for n in features if n not in multivalent}
      # one list per row: the trailing None keeps numpy from making lists of equal length a 2-D
      # array
      columns.update({n: np.array([v.encode("utf-8").split(multivalent[n].encode("utf-8"))
                                   if v else [] for v in frame[n]] + [None],
                                  dtype=object)[:-1] for n in features if n in multivalent})
      columns.update({n: frame[n].to_numpy(dtype=np.float32) for n in numeric})
      columns.update({n: frame[n].to_numpy() for n in labels})
      for s, split_writers in enumerate(writers):
        in_split = np.flatnonzero(splits == s)
        shard = (rows[s] + np.arange(len(in_split))) % len(split_writers)
        for i, writer in enumerate(split_writers):
          taken = in_split[shard == i]
          if len(taken):
            writer.write({n: values[taken].tolist() for n, values in columns.items()})
        rows[s] += len(in_split)
  finally:
    _close_all(itertools.chain.from_iterable(writers))
  return names, rows, positives


def _close_all(writers: Iterable[_ShardWriter]) -> None:
  """Closes every writer; then raises the first failure, if any."""
  failed = None
  for writer in writers:
    try:
      writer.close()
    except _WriteFailed as e:
      failed = failed or e
  if failed:
    raise failed


def _replace_dir(src: str, dst: str) -> None:
  """Renames `src` to `dst`, replacing an existing `dst` as late as possible.

  The replaced directory waits in a sibling named after this process
  (`temp_prefix`; the next run removes one a killed run left), and is put
  back if the rename fails.
  """
  if not os.path.exists(dst):
    os.rename(src, dst)
    return
  old = tempfile.mkdtemp(prefix=temp_prefix(f".{os.path.basename(dst)}.old-"),
                         dir=os.path.dirname(dst))
  os.rename(dst, os.path.join(old, "data"))
  try:
    os.rename(src, dst)
  except BaseException:
    os.rename(os.path.join(old, "data"), dst)
    os.rmdir(old)
    raise
  shutil.rmtree(old, ignore_errors=True)
