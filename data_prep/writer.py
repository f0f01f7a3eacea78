"""Raw rows -> prepared data set: split, vocabularies, TFRecord shards, schema.json, stats.json.

Every data_prep module reduces its raw layout to a stream of blocks of rows --
`data_prep.readers.Block`s (a pyarrow table of string columns, each row's line
number, the file) or, for loaders that build pandas frames, `Chunk`s (converted
to a table once) -- and hands it to `prepare`. No Python runs per row or per
value; each block goes through four steps:

1. validate (parallel): labels "0"/"1" by pyarrow compute, numeric columns by
   a pyarrow cast (`stem_tfrs.data.schema.read_numbers` for the rare fields the
   cast refuses); other label spellings ("1.0") and bad values take a slow path
   for the offending rows only. Each row draws two uniform numbers from a
   counter-based hash (splitmix64) of (seed, ordinal): one for its split, one
   for its shard. A row's ordinal is its position among all the rows the
   reader yields, across the input files in `readers.list_inputs` order (the
   start of its block plus its index in the block; bad rows take theirs too):
   row k of the input read as one file.
2. place (serial, in block order): report the block's bad rows (in line order:
   strict mode raises on the earliest), assign each row its split (the split
   object, see `prepare`) and its shard within the split (from its hash).
3. encode (parallel): count the train rows' feature values
   (`pyarrow.compute.value_counts`) and numeric moments, and serialize the
   shard records with `stem_tfrs.data.records.encode_records`.
4. write (serial, in block order): merge the counts, write the records.

Nothing depends on how the input is cut into blocks, nor on the number of
workers, nor on how the rows are cut into files (a directory of gzip'd part
files, Parquet files, or the one file they were cut from): splits and shards
are keyed on the row's ordinal, never on files, lines or arrival order (bad
rows are still reported with file and line); a shard's rows are written in
ordinal order and its records are `rows_per_record` consecutive rows of it
(a record straddling two blocks is completed when the second one is written);
counts are exact integer sums (numeric moments too: `ExactMoments`). So the
row sets, the shards' bytes, the vocabularies, stats.json and schema.json are
the same for any block size, any `processes` and any cut into files.

One core, two drivers: the steps are public functions of one block, which
`prepare` (threads) and `data_prep.beam` (a Beam pipeline) both call --
`BlockSpec.of`, `validate_block`, `report_bad_rows`, `place_block`,
`split_totals`, `record_columns`, `count_train` -- their sums merge
(`ValueCounts`, `ExactMoments`, `BadRows.add_kind`) into a `Counted`, and
`finish` writes vocab/, schema.json, stats.json and bad_rows.json and renames
the data set into place. The loaders that read rows as they are state their
input once as a `Layout`, which both drivers read. Vocabularies (and numeric moments) are
counted on the train split only, whatever the split: counting test rows
would let the test split shape the model. The raw input is read once:
`RandomSplit` and splits by a column's value place rows as they come;
`ExactSplit`, which needs the row count first, keeps the validated rows in
an Arrow stream file in the temporary directory (about the size of the kept
columns' text) and places them from there, which costs far less than
parsing the text again.

Workers are threads, not processes: pyarrow compute, numpy's large-array
operations and the record encoding release the GIL for most of their time
(benchmarks/data_prep.py measures 1 and 2 workers), blocks need no pickling
between steps, and TensorFlow (imported for the shard writer) must not be
forked.

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
import concurrent.futures
import contextlib
import dataclasses
import fractions
import itertools
import math
import os
import shutil
import tempfile
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from stem_tfrs.data.records import encode_records
from stem_tfrs.errors import first_line
from stem_tfrs.files import remove_abandoned, temp_prefix, write_json
from stem_tfrs.data.schema import (SHARD_BYTES, SPLITS, STATS_FILE, CategoricalFeature,
                              NumericFeature, Schema, check_column_names, check_task_names,
                              read_numbers, row_lengths_key)
from stem_tfrs.errors import DataError  # noqa: F401  (raised here; defined with the others)

BAD_ROWS_FILE = "bad_rows.json"
#: Rows a shard record holds by default: tf.data and the parser pay per record (stem_tfrs.data.schema).
ROWS_PER_RECORD = 64
#: Ordinals whose rows `ExactSplit` draws its split sizes for together (a group: ordinal // this).
GROUP_ROWS = 1 << 16


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

  Earliest: by file (in the order the writer meets the files, `register`, or
they first report a bad row), then line, whichever column or reader reports a
row, and in whatever order. Kinds are listed (bad_rows.json, `summary`) in
the order of their earliest row, so the file's bytes do not depend on which
worker thread reported first.

  Bad rows are skipped; in strict mode the first one raises `DataError`
  instead. The writer reads its input once and calls `freeze()` when it is
  read; later reports are not counted.
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

  def register(self, source: str) -> None:
    """Numbers `source` among the files, if new: the writer calls it as each file's first
    rows arrive, in input order, so that a later file's earlier report does not put it first."""
    self._sources.setdefault(source, len(self._sources))

  def add_kind(self, kind: str, rows: int, examples: Sequence[Tuple[Tuple[int, int], str]]
               ) -> None:
    """Adds `rows` bad rows of `kind` counted elsewhere (another worker, a Beam pipeline),
    with their earliest `examples` as ((file index, line), "where") pairs."""
    if self._frozen:
      return
    self.counts[kind] += rows
    for key, where in examples:
      self._keep_example(kind, tuple(key), where)

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

  def kinds(self) -> List[str]:
    """The kinds seen, in the order of their earliest row (file, line)."""
    return sorted(self.counts, key=lambda kind: (self._example_lines[kind][:1], kind))

  def to_json(self) -> dict:
    return {"total": self.total,
            "by_kind": {k: {"rows": self.counts[k], "first": self.examples[k]}
                        for k in self.kinds()}}

  def first(self) -> str:
    """The earliest bad row of the most common kind, as "kind: where"."""
    kind = max(self.kinds(), key=self.counts.get)  # the earliest of the most common
    return f"{kind}: {self.examples[kind][0]}"

  def summary(self) -> str:
    """One line per kind, for the command line."""
    if not self.total:
      return "no bad rows"
    return "\n".join([f"skipped {self.total:,} bad row(s):"] + [
        f"  {kind}: {self.counts[kind]:,} (first: {self.examples[kind][0]})"
        for kind in self.kinds()])


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
class SplitRows:
  """A block's usable rows, as a split sees them.

  Attributes:
    table: The rows' raw columns, as strings ("" where empty).
    file_start: The ordinal of the first row of their file (the rows of one
      file are numbered together; see `ExactSplit`).
    ordinals: int64 [rows]: each row's ordinal in the input, increasing.
    draws: float64 [rows]: each row's uniform draw in [0, 1), a hash of
      (seed, ordinal): the same for a row however the input is cut.
  """
  table: pa.Table
  file_start: int
  ordinals: np.ndarray
  draws: np.ndarray


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

  A row's draw is a hash of (seed, ordinal) (`SplitRows.draws`), so its
  split does not depend on how the input is read. Split sizes vary around
  their fractions; one pass over the input.
  """

  def assign(self, rows: SplitRows) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test)."""
    valid_end = self.test + (1.0 - self.test) * self.valid_of_rest
    return np.where(rows.draws < self.test, 2, np.where(rows.draws < valid_end, 1, 0))


@dataclasses.dataclass(frozen=True)
class ExactSplit(_FractionSplit):
  """Exact split sizes, as scikit-learn's `train_test_split` applied twice gives them.

  test = ceil(test * N) rows, then valid = ceil(valid_of_rest * (N - test)),
  drawn uniformly at random without replacement. The sizes need N, so the
  writer counts the usable rows first, per group of `GROUP_ROWS` ordinals
  (and per file within a group, so that a worker reading one file knows the
  group's rows before it), keeping them aside (see `prepare`), then calls
  `plan`: each group's test and valid counts are drawn in group order by
  sequential hypergeometric draws from one generator seeded by `seed`, and
  which of a group's usable rows (in ordinal order) get them by a
  permutation seeded by (seed, group). Nothing depends on how the input is
  cut into blocks or files. As with every split,
  the vocabularies are counted on the train rows.
  """
  counts_rows_first = True

  def sizes(self, total_rows: int) -> Tuple[int, int, int]:
    """(train, valid, test) row counts."""
    test = math.ceil(self.test * total_rows)
    valid = math.ceil(self.valid_of_rest * (total_rows - test))
    return total_rows - test - valid, valid, test

  def plan(self, group_rows: Dict[Tuple[int, int], int], seed: int) -> "_ExactPlan":
    """The split of the usable rows counted per (ordinal // GROUP_ROWS, file start) key:
    an object whose `assign(rows)` places the rows of each file, met in ordinal order
    (the files of a group in any order)."""
    per_group: Dict[int, int] = collections.Counter()
    offsets = {}
    for group, file_start in sorted(group_rows):
      offsets[(group, file_start)] = per_group[group]  # the group's rows in earlier files
      per_group[group] += group_rows[(group, file_start)]
    total = sum(per_group.values())
    _, valid, test = self.sizes(total)
    rng = np.random.default_rng(seed)
    left, quotas = total, {}
    for group in sorted(per_group):
      n = per_group[group]
      n_test = _hypergeometric(rng, test, left - test, n)
      n_valid = _hypergeometric(rng, valid, left - test - valid, n - n_test)
      left, test, valid = left - n, test - n_test, valid - n_valid
      quotas[group] = (n, n_test, n_valid)
    return _ExactPlan(quotas, offsets, seed)


def _hypergeometric(rng: np.random.Generator, good: int, bad: int, n: int) -> int:
  """Good items among `n` drawn without replacement from `good` + `bad`.

  numpy draws exactly below 10^9 items; beyond, a binomial draw kept within
  what is possible (the last group still takes exactly what is left).
  """
  if n <= 0 or good <= 0:
    return 0
  if good < 10**9 and bad < 10**9:
    return int(rng.hypergeometric(good, bad, n))
  drawn = int(rng.binomial(n, good / (good + bad)))
  return min(max(drawn, n - bad, 0), good, n)


class _ExactPlan:
  """`ExactSplit`'s rows placed group by group: a row's position among its group's usable
  rows (in ordinal order: the group's rows in earlier files, then those before it in its
  file) picks its split from the group's seeded permutation."""

  def __init__(self, quotas: Dict[int, Tuple[int, int, int]],
               offsets: Dict[Tuple[int, int], int], seed: int):
    self._quotas, self._offsets, self._seed = quotas, offsets, seed
    self._key: Optional[Tuple[int, int]] = None
    self._group: Optional[int] = None
    self._splits = np.zeros(0, dtype=np.int64)
    self._position = 0

  def assign(self, rows: SplitRows) -> np.ndarray:
    groups = rows.ordinals // GROUP_ROWS
    out = np.zeros(len(groups), dtype=np.int64)
    cuts = [0, *(np.flatnonzero(np.diff(groups)) + 1).tolist(), len(groups)]
    for start, stop in zip(cuts[:-1], cuts[1:]):
      if start == stop:
        continue
      group = int(groups[start])
      key = (group, rows.file_start)
      if key != self._key:
        if group != self._group:
          n, n_test, n_valid = self._quotas[group]
          order = np.random.default_rng([self._seed, group]).permutation(n)
          self._splits = np.zeros(n, dtype=np.int64)
          self._splits[order[:n_test]] = 2
          self._splits[order[n_test:n_test + n_valid]] = 1
          self._group = group
        self._key, self._position = key, self._offsets[key]
      out[start:stop] = self._splits[self._position:self._position + stop - start]
      self._position += stop - start
    return out


class _PandasSplit:
  """A split object of the older shape: `assigner(total_rows, seed)` returning a function
  of a pandas frame of the rows -> split index per row (by the rows' values)."""

  def __init__(self, split, seed: int):
    self._assign = split.assigner(None, seed)

  def assign(self, rows: SplitRows) -> np.ndarray:
    return np.asarray(self._assign(rows.table.to_pandas()))


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
  """splitmix64's finalizer of a Python int (64 bits)."""
  x = (x + _GOLDEN) & _MASK
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
  return x ^ (x >> 31)


def row_draws(seed: int, ordinals: np.ndarray, stream: int) -> np.ndarray:
  """Uniform draws in [0, 1) per row: splitmix64 of (seed, stream, ordinal).

  A counter-based hash: a row's draw depends on nothing but its own key, so
  any reader, chunking or runner gives each row the same draw. `stream`
  tells independent draws of one row apart (0: split, 1: shard).
  """
  key = np.uint64(_mix(_mix(seed & _MASK) ^ stream))
  with np.errstate(over="ignore"):
    z = np.asarray(ordinals).astype(np.uint64) ^ key
    z = z + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclasses.dataclass(frozen=True)
class Layout:
  """A loader's input and what to make of it, stated once: its files, how to read them
  (`data_prep.readers.read_blocks`' arguments) and `prepare`'s arguments. The loaders that
  read their rows as they are (tiktok, qkvideo, logs) build one (`layout(raw, ...)` in each
  module); the local path (`prepare_layout`, which the loader's `prepare_<name>` calls) and
  `data_prep.beam` both read it.

  Attributes:
    raw: What `read_blocks` reads: a path (file, directory, glob) or a list of files.
    sep, columns, required: `read_blocks`' arguments.
    inputs: The raw files and directories: `out_dir` may hold none of them.
    block_bytes: Bytes of text a block holds, about (None: the reader's default).
    The others: `prepare`'s arguments of the same names.
  """
  raw: Union[str, List[str]]
  sep: str
  columns: Optional[List[str]]
  required: List[str]
  features: List[str]
  labels: List[str]
  group_column: Optional[str]
  split: object
  multivalent: Dict[str, str] = dataclasses.field(default_factory=dict)
  numeric: List[str] = dataclasses.field(default_factory=list)
  log1p: List[str] = dataclasses.field(default_factory=list)
  inputs: List[str] = dataclasses.field(default_factory=list)
  min_count: int = 1
  seed: int = 42
  rows_per_record: int = ROWS_PER_RECORD
  num_shards: Dict[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 8, "valid": 2, "test": 2})
  block_bytes: Optional[int] = None

  def read(self, bad_rows: BadRows, raw: Union[str, List[str], None] = None) -> Iterator:
    """The `Block`s of `raw` (by default all of `self.raw`; a worker passes its file)."""
    from data_prep import readers  # pylint: disable=g-import-not-at-top; readers imports this
    extra = {} if self.block_bytes is None else {"block_bytes": self.block_bytes}
    return readers.read_blocks(self.raw if raw is None else raw, sep=self.sep,
                               columns=self.columns, required=self.required,
                               bad_rows=bad_rows, **extra)

  def prepare_args(self) -> dict:
    """`prepare`'s keyword arguments (but `out_dir` and how to run)."""
    return dict(features=self.features, labels=self.labels, group_column=self.group_column,
                min_count=self.min_count, seed=self.seed, split=self.split,
                num_shards=self.num_shards, multivalent=self.multivalent,
                rows_per_record=self.rows_per_record, numeric=self.numeric,
                log1p=self.log1p, inputs=self.inputs)

  def spec(self) -> "BlockSpec":
    """The per-block spec (`BlockSpec.of` of the same arguments)."""
    return BlockSpec.of(features=self.features, labels=self.labels, numeric=self.numeric,
                        log1p=self.log1p, multivalent=self.multivalent, seed=self.seed,
                        rows_per_record=self.rows_per_record, num_shards=self.num_shards,
                        split=self.split)


def prepare_layout(layout: Layout, out_dir: str, *, bad_rows: Optional[BadRows] = None,
                   overwrite: bool = False, processes: Optional[int] = None) -> dict:
  """`prepare` of the rows `layout` describes, into `out_dir`; returns the stats.

  The local path of the loaders that state a layout (tiktok, qkvideo, logs). Bad
  rows are skipped and counted unless `bad_rows` is strict (by default they are).
  """
  bad_rows = bad_rows if bad_rows is not None else BadRows()
  return prepare(lambda: layout.read(bad_rows), out_dir=out_dir, overwrite=overwrite,
                 bad_rows=bad_rows, processes=processes, **layout.prepare_args())


def prepare(read_chunks: Callable[[], Iterable], *, features: Sequence[str],
            labels: Sequence[str], group_column: Optional[str], out_dir: str,
            min_count: int = 1, seed: int = 42, split=RandomSplit(),
            num_shards: Optional[Dict[str, int]] = None, overwrite: bool = False,
            bad_rows: Optional[BadRows] = None,
            multivalent: Optional[Dict[str, str]] = None,
            rows_per_record: int = ROWS_PER_RECORD, numeric: Sequence[str] = (),
            log1p: Sequence[str] = (), inputs: Sequence[str] = (),
            processes: Optional[int] = None, timings: Optional[Dict[str, float]] = None) -> dict:
  """Writes a prepared data set to `out_dir` and returns its stats.

  Args:
    read_chunks: Called once; yields the raw rows as
      `data_prep.readers.Block`s or `Chunk`s (a frame's columns are read as
      text, a missing value as ""). Rows of one source come in line order.
    features: Categorical columns to keep, in model input order.
    labels: 0/1 label columns, one per task.
    group_column: The feature that groups rows for gAUC (the user id).
    out_dir: Destination directory; must not exist unless `overwrite`, and
      then be a prepared data set that `check_out` lets it replace.
    min_count: Values seen fewer times in the train split map to the OOV row.
    seed: Seed of the split and of the shard each row goes to.
    split: Which split each row goes to (0 train, 1 valid, 2 test). The
      protocol: an object with `assign(rows: SplitRows) -> split index per
      row`, called for each block's usable rows in input order (`RandomSplit`
      by the rows' hashed draws; `data_prep.logs.TimeSplit` by a column's
      value); or, with `counts_rows_first` (`ExactSplit`), one whose
      `plan(group_rows, seed)` returns such an object once the usable rows
      are counted per (ordinal // GROUP_ROWS, file start) (its
      `rows.table` holds the features only); or, the older
      shape, `assigner(None, seed)` returning a function of a pandas frame
      of the rows. It may also have `unplaceable(table) -> (bad mask, kind,
      column, what)` for rows it cannot place (bad rows, reported as
      "column 'C': 'value' what"), and `expects_rows(split index)`: a split
      left without rows is an error unless that says so (a fraction of 0).
    num_shards: Shards per split (default train 8, valid 2, test 2).
    overwrite: Replace an existing `out_dir` (a prepared data set only).
    bad_rows: Collects rows with a label that is not 0 or 1 (skipped), or,
      if strict, raises on the first; the readers report theirs here too.
      Written to `bad_rows.json` beside the data.
    multivalent: Feature -> separator, for features holding a list of values
      in one raw field ("Action|Comedy"); an empty field is an empty list.
    rows_per_record: Rows a shard record holds, consecutive rows of a shard
      (see stem_tfrs.data.schema); 1 writes one row a record.
    numeric: Numeric columns to keep, after the categorical ones (see
      `stem_tfrs.data.schema.NumericFeature`). An empty field is a missing value
      (NaN in the shards), a field that is not a number a bad row; their
      mean and std are measured on the train split.
    log1p: Those of `numeric` the model takes the signed log of first.
    inputs: The raw files and directories `read_chunks` reads: `out_dir`
      may not be or hold any of them.
    processes: Worker threads validating and encoding blocks (default: the
      machine's cores); the output is the same for any number. A strict
      `bad_rows` works through the blocks one at a time.
    timings: If given, filled with the seconds spent per step, summed over
      the workers: "read" (waiting for the reader), "validate", "place",
      "count", "encode", "write" (records and merging counts), "finish"
      (vocabularies, schema, rename); "total" is the wall time.

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
  check_arguments(features=features, labels=labels, numeric=numeric, group_column=group_column,
                  multivalent=multivalent, log1p=log1p, min_count=min_count,
                  rows_per_record=rows_per_record)
  bad_rows = bad_rows if bad_rows is not None else BadRows(strict=True)
  processes = _workers(processes, bad_rows)
  with temporary_output(out_dir, overwrite, inputs) as (out_dir, tmp):
    started = time.perf_counter()
    timed = _Timings(timings)
    spec = BlockSpec.of(features=features, labels=labels, numeric=numeric, log1p=log1p,
                        multivalent=multivalent, seed=seed, rows_per_record=rows_per_record,
                        num_shards=num_shards, split=split, timings=timed)
    done = _write_shards(read_chunks, spec, split, bad_rows, processes, tmp)
    bad_rows.freeze()
    finishing = time.perf_counter()
    stats = finish(tmp, out_dir, Counted(done.rows, done.positives, done.counts, done.moments),
                   spec, group_column=group_column, min_count=min_count, split=split,
                   bad_rows=bad_rows, overwrite=overwrite, inputs=inputs)
  timed.add("finish", time.perf_counter() - finishing)
  timed.add("total", time.perf_counter() - started)
  return stats


def _workers(processes: Optional[int], bad_rows: BadRows) -> int:
  """The worker threads `prepare` runs: `processes` checked (default the machine's cores),
  one for a strict `bad_rows`."""
  processes = (os.cpu_count() or 1) if processes is None else processes
  if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
    raise ValueError(f"processes must be a positive integer, got {processes!r}")
  if bad_rows.strict:
    return 1  # one block at a time: the earliest bad row raises, whoever reports it
  return processes


def _write_shards(read_chunks: Callable[[], Iterable], spec: "BlockSpec", split,
                  bad_rows: BadRows, workers: int, tmp: str) -> "_Written":
  """`prepare`'s pass over the rows: each block validated, placed in a split and a shard,
  encoded and written to the shards in `tmp`, in block order; returns what they add up to.

  A split that counts the rows first (`counts_rows_first`) gets a first pass
  (`_count_rows`) that keeps the validated rows in a spill file, which this
  pass then reads in place of the raw input.
  """
  timed, spill = spec.timed, None
  if getattr(split, "counts_rows_first", False):
    spill = os.path.join(tmp, ".usable-rows.arrow")
    group_rows = _count_rows(read_chunks, spec, bad_rows, workers, spill)
    bad_rows.freeze()
    _check_total(sum(group_rows.values()), bad_rows)
    placer = split.plan(group_rows, spec.seed)
    items = _spilled(spill, timed)
    first = timed.wrap("validate", lambda batch: _unspilled(batch, spec))
  else:
    placer = split if hasattr(split, "assign") else _PandasSplit(split, spec.seed)
    items = _numbered(read_chunks(), timed, bad_rows)
    first = timed.wrap("validate", lambda item: _valid_rows(*item, spec))
  names = shard_names(spec)
  writers = [_RecordWriter(os.path.join(tmp, n)) for s in SPLITS for n in names[s]]
  try:
    done = _Written(spec, writers)
    place = lambda valid: _place(valid, spec, placer, bad_rows, done)
    _run(items, first, timed.wrap("place", place), lambda placed: _encode(placed, spec),
         timed.wrap("write", done.add), workers)
    with timed("write"):
      done.flush()
  finally:
    _close_all(writers)
    if spill and os.path.exists(spill):
      os.remove(spill)
  return done


def check_arguments(*, features: List[str], labels: List[str], numeric: List[str],
                    group_column: Optional[str], multivalent: Dict[str, str],
                    log1p: Sequence[str], min_count: int, rows_per_record: int) -> None:
  """A one-line error for `prepare`'s arguments that cannot make a data set, before a row
  is read (both drivers check them first)."""
  _check_columns(features, numeric, labels, group_column, multivalent, log1p)
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  if rows_per_record < 1:
    raise ValueError(f"rows_per_record must be >= 1, got {rows_per_record}")


@contextlib.contextmanager
def temporary_output(out_dir: str, overwrite: bool,
                     inputs: Sequence[str]) -> Iterator[Tuple[str, str]]:
  """(`out_dir` as an absolute path, a new temporary sibling of it) for the data set to be
  written in, after `check_out`; the temporaries of killed runs are removed first.

  If the block raises, the temporary directory is removed, and a failed write
  (`_WriteFailed`) becomes one OSError naming `out_dir`. `finish` renames the
  sibling into place.
  """
  out_dir = check_out(out_dir, overwrite, inputs)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  for kind in ("tmp", "old"):  # those of killed runs (temp_prefix names the process)
    remove_abandoned(parent, f".{os.path.basename(out_dir)}.{kind}-")
  tmp = None
  try:
    with _writing():
      tmp = _temporary_sibling(out_dir)
    yield out_dir, tmp
  except BaseException as e:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, _WriteFailed):
      raise OSError(f"cannot write {out_dir}: {e}") from None
    raise


@dataclasses.dataclass
class Counted:
  """What a data set's blocks add up to, summed over them in any order.

  Attributes:
    rows: int64 [splits]: usable rows per split.
    positives: int64 [splits, labels]: rows labelled 1 per split and task.
    counts: Feature -> its train rows' value counts.
    moments: Numeric feature -> its train rows' moments.
  """
  rows: np.ndarray
  positives: np.ndarray
  counts: Dict[str, "ValueCounts"]
  moments: Dict[str, "ExactMoments"]


def shard_names(spec: "BlockSpec") -> Dict[str, List[str]]:
  """Split -> its shards' file names, `<split>-XXXXX-of-YYYYY.tfrecord`; a shard's index
  over all splits (`place_block`'s) is its position in the splits' lists, concatenated."""
  return {s: [f"{s}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
          for s, n in zip(SPLITS, spec.shards)}


def finish(tmp: str, out_dir: str, counted: Counted, spec: "BlockSpec", *,
           group_column: Optional[str], min_count: int, split, bad_rows: BadRows,
           overwrite: bool, inputs: Sequence[str]) -> dict:
  """Completes the data set whose shards are written in `tmp` and renames it to `out_dir`.

  The checks a whole data set needs (rows at all, each split that expects rows
  has some, each feature keeps a value, each numeric feature varies), then
  vocab/, schema.json, stats.json, bad_rows.json (a shard no row went to is
  written empty), and the rename into place, replacing `out_dir` only as
  `check_out` allows it. Both drivers (`prepare`, `data_prep.beam`) end here;
  the caller removes `tmp` if this raises.

  Returns:
    The stats written to stats.json.

  Raises:
    DataError: as `prepare` (one line each).
    _WriteFailed: a write failed.
  """
  bad_rows.freeze()
  counts, moments = _checked_totals(counted, spec, split, min_count, bad_rows)
  names = shard_names(spec)
  with _writing():
    for name in itertools.chain.from_iterable(names.values()):
      if not os.path.exists(os.path.join(tmp, name)):
        _RecordWriter(os.path.join(tmp, name)).close()
    schema_features = _write_vocabularies(tmp, counts, min_count, spec.multivalent)
  schema = Schema(features=schema_features, labels=spec.labels, group_column=group_column,
                  splits=names, rows_per_record=spec.rows_per_record, directory=tmp,
                  numeric_features=[NumericFeature(name, *moments[name].mean_and_std(),
                                                   log1p=name in spec.log1p)
                                    for name in spec.numeric])
  stats = _stats(tmp, names, counted, spec.labels)
  with _writing():
    schema.save(tmp)
    for name, content in ((STATS_FILE, stats), (BAD_ROWS_FILE, bad_rows.to_json())):
      write_json(os.path.join(tmp, name), content)
  check_out(out_dir, overwrite, inputs)  # again: what is there now is what is replaced
  with _writing():
    _replace_dir(tmp, out_dir)
  return stats


def _checked_totals(counted: Counted, spec: "BlockSpec", split, min_count: int,
                    bad_rows: BadRows) -> Tuple[Dict[str, "ValueCounts"],
                                                Dict[str, "ExactMoments"]]:
  """(value counts per feature, moments per numeric feature) of a whole data set, once it
  has usable rows, each split that expects rows has some, each feature keeps a value and
  each numeric feature varies.

  Raises:
    DataError: the first of those that fails, in one line.
  """
  rows = counted.rows
  total = int(rows.sum())
  _check_total(total, bad_rows)
  expects_rows = getattr(split, "expects_rows", lambda s: True)
  empty = [name for s, name in enumerate(SPLITS) if not rows[s] and expects_rows(s)]
  if empty:
    raise DataError(f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would "
                    f"be empty: none of the {total:,} usable rows falls in "
                    f"{'them' if len(empty) > 1 else 'it'} under {split}")
  counts = {name: counted.counts.get(name) or ValueCounts() for name in spec.features}
  empty = [name for name in spec.features if not counts[name].kept(min_count)]
  if empty:
    raise DataError(f"no value of feature(s) {empty} is seen min_count={min_count} times in "
                    "the train split: lower --min_count, or drop the feature")
  moments = {name: counted.moments.get(name) or ExactMoments() for name in spec.numeric}
  flat = [name for name in spec.numeric if not moments[name].varies()]
  if flat:
    raise DataError(f"numeric feature(s) {flat} hold no value, or a single one, in the train "
                    "split: the model could not learn from them; drop them")
  return counts, moments


def _stats(tmp: str, names: Dict[str, List[str]], counted: Counted,
           labels: List[str]) -> dict:
  """stats.json's content: per split its rows, positive rate per task and shard sizes."""
  rows, positives = counted.rows, counted.positives
  return {
      name: {"rows": int(rows[s]),
             "positive_rate": {task: float(positives[s, t] / max(rows[s], 1))
                               for t, task in enumerate(labels)},
             # What a shard cut short by a copy or a full disk no longer holds: checked in
             # O(1) a shard before training reads it (stem_tfrs.data.shards.validate_shards).
             SHARD_BYTES: {n: os.path.getsize(os.path.join(tmp, n)) for n in names[name]}}
      for s, name in enumerate(SPLITS)}


def _check_total(total: int, bad_rows: BadRows) -> None:
  if total == 0:
    raise DataError("the raw input holds no usable rows" +
                    (f" ({bad_rows.total:,} bad rows skipped; first {bad_rows.first()})"
                     if bad_rows.total else ""))


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """What each block's rows become: the columns kept, the split's own check, the seed, the
  shards. Made by `BlockSpec.of`; each driver's per-block steps (`validate_block`,
  `place_block`, `record_columns`, `count_train`) take it."""
  features: List[str]
  labels: List[str]
  numeric: List[str]
  log1p: set
  multivalent: Dict[str, str]
  seed: int
  rows_per_record: int
  shards: List[int]  # per split
  unplaceable: Optional[Callable]
  timed: "_Timings"

  @property
  def columns(self) -> List[str]:
    return self.features + self.numeric + self.labels

  @classmethod
  def of(cls, *, features: Sequence[str], labels: Sequence[str], numeric: Sequence[str] = (),
         log1p: Sequence[str] = (), multivalent: Optional[Dict[str, str]] = None,
         seed: int = 42, rows_per_record: int = ROWS_PER_RECORD,
         num_shards: Optional[Dict[str, int]] = None, split=None,
         timings: Optional["_Timings"] = None) -> "BlockSpec":
    """The spec of `prepare`'s arguments of the same names (`num_shards` completed with
    its defaults); `timings`: where the steps' seconds go (nowhere by default)."""
    num_shards = {"train": 8, "valid": 2, "test": 2, **(num_shards or {})}
    return cls(list(features), list(labels), list(numeric), set(log1p), dict(multivalent or {}),
               seed, rows_per_record, [num_shards[s] for s in SPLITS],
               getattr(split, "unplaceable", None),
               timings if timings is not None else _Timings(None))


def _numbered(items: Iterable, timed: "_Timings", bad_rows: BadRows) -> Iterator[tuple]:
  """(block or chunk, ordinal of its file's first row, ordinal of its first row): rows are
  numbered in the order they come, a file's from where it starts (and registered with
  `bad_rows` in that order)."""
  source, file_start, ordinal = None, 0, 0
  items = iter(items)
  with contextlib.closing(items) if hasattr(items, "close") else contextlib.nullcontext():
    while True:
      with timed("read"):
        item = next(items, None)
      if item is None:
        return
      if item.source != source:
        source, file_start = item.source, ordinal
        bad_rows.register(source)
      yield item, file_start, ordinal
      ordinal += _rows(item)


def _rows(item) -> int:
  """Rows of a `Block` or `Chunk`."""
  return len(item.frame) if isinstance(item, Chunk) else item.table.num_rows


class _Timings:
  """Seconds per step, summed over threads, into a caller's dict (or nowhere)."""

  def __init__(self, seconds: Optional[Dict[str, float]]):
    self.seconds = seconds
    self._lock = threading.Lock()

  def add(self, step: str, seconds: float) -> None:
    if self.seconds is not None:
      with self._lock:
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds

  @contextlib.contextmanager
  def __call__(self, step: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(step, time.perf_counter() - start)

  def wrap(self, step: str, function: Callable) -> Callable:
    def timed(*args):
      with self(step):
        return function(*args)
    return timed


def _run(items: Iterable, first: Callable, middle: Callable, second: Optional[Callable],
         last: Optional[Callable], workers: int) -> None:
  """For each item in order: `first` (in parallel), `middle` (here, in item order),
  `second` (in parallel), `last` (here, in item order); at most about 2 x `workers`
  items in flight."""
  items = iter(items)
  try:
    if workers == 1:
      for item in items:
        done = middle(first(item))
        if second:
          last(second(done))
      return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      firsts, seconds = collections.deque(), collections.deque()

      def finish(limit):
        while len(seconds) > limit:
          last(seconds.popleft().result())

      def advance(limit):
        while len(firsts) > limit:
          done = middle(firsts.popleft().result())
          if second:
            seconds.append(pool.submit(second, done))
            finish(workers)

      try:
        for item in items:
          firsts.append(pool.submit(first, item))
          advance(workers)
        advance(0)
        finish(0)
      finally:
        for future in itertools.chain(firsts, seconds):
          future.cancel()
  finally:
    close = getattr(items, "close", None)
    if close:
      close()


@dataclasses.dataclass
class ValidRows:
  """A block's usable rows, validated."""
  table: pa.Table
  file_start: int  # the ordinal of its file's first row
  source: str
  lines: np.ndarray  # line numbers in `source`
  ordinals: np.ndarray
  labels: Dict[str, np.ndarray]  # int64 0/1
  numbers: Dict[str, np.ndarray]  # float64 (of float32 values), NaN where missing
  bad: List[Tuple[int, str, str]]  # (line, kind, detail) of the skipped rows, in line order
  draws: np.ndarray  # split draw per row
  shard_draws: np.ndarray


def _count_rows(read_chunks, spec: BlockSpec, bad_rows: BadRows, workers: int,
                spill: str) -> Dict[Tuple[int, int], int]:
  """The first pass of a split that needs the row count: validates the rows, counts the usable
  ones per (ordinal group, file start), and keeps them in the Arrow stream file `spill`, which the
  second pass reads instead of parsing the raw text again."""
  group_rows: Dict[Tuple[int, int], int] = collections.Counter()
  writer = schema = None

  def count(valid: ValidRows) -> None:
    nonlocal writer, schema
    _report(valid, bad_rows)
    if not len(valid.ordinals):
      return
    for key, rows in group_counts(valid.ordinals, valid.file_start).items():
      group_rows[key] += rows
    batch = pa.record_batch(
        [pa.array(np.full(len(valid.ordinals), valid.file_start, dtype=np.int64)),
         pa.array(valid.ordinals)]
        + [_array(valid.table[name]) for name in spec.features]
        + [pa.array(valid.numbers[name]) for name in spec.numeric]
        + [pa.array(valid.labels[name]) for name in spec.labels],
        names=["file_start", "ordinal"] + spec.features + spec.numeric + spec.labels)
    with _writing():
      if writer is None:
        schema = batch.schema
        writer = pa.ipc.new_stream(spill, schema)
      writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)

  try:
    _run(_numbered(read_chunks(), spec.timed, bad_rows),
         spec.timed.wrap("validate", lambda item: _valid_rows(*item, spec, draws=False)),
         spec.timed.wrap("place", count), None, None, workers)
  finally:
    if writer is not None:
      with _writing():
        writer.close()
  return dict(group_rows)


def group_counts(ordinals: np.ndarray, file_start: int) -> Dict[Tuple[int, int], int]:
  """Usable rows per (ordinal // GROUP_ROWS, file start): what `ExactSplit.plan` takes,
  summed over the blocks."""
  groups, n = np.unique(np.asarray(ordinals) // GROUP_ROWS, return_counts=True)
  return {(group, file_start): rows for group, rows in zip(groups.tolist(), n.tolist())}


def _spilled(spill: str, timed: "_Timings") -> Iterator[pa.RecordBatch]:
  """The record batches `_count_rows` kept, in order (read, not mapped: a batch's memory
  goes when it is done)."""
  if not os.path.exists(spill):
    return
  with pa.OSFile(spill) as f:
    reader = pa.ipc.open_stream(f)
    while True:
      with timed("read"):
        try:
          batch = reader.read_next_batch()
        except StopIteration:
          return
      yield batch


def _unspilled(batch: pa.RecordBatch, spec: BlockSpec) -> ValidRows:
  """A kept batch as the validated rows it was."""
  ordinals = batch.column("ordinal").to_numpy()
  file_start = int(batch.column("file_start")[0].as_py())
  table = pa.Table.from_batches([batch.select(spec.features)])
  return ValidRows(table, file_start, "", np.zeros(0, np.int64), ordinals,
                {name: batch.column(name).to_numpy() for name in spec.labels},
                {name: batch.column(name).to_numpy() for name in spec.numeric}, [],
                row_draws(spec.seed, ordinals, 0), row_draws(spec.seed, ordinals, 1))


def _report(valid: ValidRows, bad_rows: BadRows) -> None:
  for line, kind, detail in valid.bad:
    bad_rows.add(kind, valid.source, line, detail)


def validate_block(item, file_start: int, start: int, spec: BlockSpec,
                   draws: bool = True) -> ValidRows:
  """A `Block`'s (or `Chunk`'s) usable rows (see `_valid_rows`), numbered from `start`, the
  ordinal of its first row; `file_start` is that of its file's first row. Bad rows are in
  `.bad`, to report (`report_bad_rows`) in block order. `draws`: whether to hash the rows'
  split and shard draws (not needed to count rows)."""
  return _valid_rows(item, file_start, start, spec, draws)


def report_bad_rows(valid: ValidRows, bad_rows: BadRows) -> None:
  """Reports the block's bad rows to `bad_rows`, in line order."""
  _report(valid, bad_rows)


def _valid_rows(item, file_start: int, start: int, spec: BlockSpec,
                draws: bool = True) -> ValidRows:
  """A block's (or chunk's) usable rows: labels as int64 0/1, numeric columns as float64
  (NaN where missing or not finite); the others' line, kind and detail. `start` is the
  ordinal of its first row, `file_start` that of its file's first row.

  A row's first bad value makes it a bad row (the split's own check first, then
  labels, then numeric columns, in their order).
  """
  table, lines, source = _as_table(item)
  missing = [c for c in spec.columns if c not in table.column_names]
  if missing:
    raise DataError(f"{source}: missing column(s) {missing}; found {table.column_names}")
  problems: Dict[int, Tuple[str, str]] = {}  # row -> (kind, detail), the first
  if spec.unplaceable is not None:
    mask, kind, column, what = spec.unplaceable(table)
    for row in np.flatnonzero(mask).tolist():
      problems.setdefault(row, (kind, f"column '{column}': '{table[column][row].as_py()}' "
                                      f"{what}"))
  label_values = {label: _read_label(_array(table[label]), label, problems)
                  for label in spec.labels}
  numbers = {name: _read_numeric(_array(table[name]), name, problems) for name in spec.numeric}
  bad = [(int(lines[row]), *problems[row]) for row in sorted(problems)]
  ordinals = np.arange(start, start + table.num_rows, dtype=np.int64)
  if problems:
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(problems)] = False
    table, lines, ordinals = table.filter(pa.array(keep)), lines[keep], ordinals[keep]
    label_values = {n: v[keep] for n, v in label_values.items()}
    numbers = {n: v[keep] for n, v in numbers.items()}
  none = np.zeros(0)
  return ValidRows(table, file_start, source, lines, ordinals, label_values, numbers, bad,
                row_draws(spec.seed, ordinals, 0) if draws else none,
                row_draws(spec.seed, ordinals, 1) if draws else none)


def _as_table(item) -> Tuple[pa.Table, np.ndarray, str]:
  """(string table, line numbers, source) of a `Block` or a `Chunk`."""
  if isinstance(item, Chunk):
    frame = item.frame
    table = pa.table({str(name): _string_array(frame.iloc[:, i])
                      for i, name in enumerate(frame.columns)})
    return table, np.asarray(frame.index, dtype=np.int64), item.source
  return item.table, np.asarray(item.lines, dtype=np.int64), item.source


def _string_array(column: pd.Series) -> pa.Array:
  """A frame's column as a string array, "" for a missing value."""
  try:
    values = pa.array(column, from_pandas=True)
  except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: Python's own text of each
    values = pa.array([None if v is None or v is pd.NA or (isinstance(v, float) and v != v)
                       else str(v) for v in column], pa.string())
  if pa.types.is_dictionary(values.type):
    values = values.dictionary_decode()
  if pa.types.is_boolean(values.type):  # a 0/1 label held as True/False
    values = pc.cast(values, pa.int8())
  if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
    values = pc.cast(values, pa.string())
  return pc.fill_null(values, "")


def _array(column) -> pa.Array:
  return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _read_label(column: pa.Array, label: str,
                problems: Dict[int, Tuple[str, str]]) -> np.ndarray:
  """A label column as int64 0/1; a row holding anything else goes to `problems`."""
  ones = pc.equal(column, "1")
  values = ones.to_numpy(zero_copy_only=False).astype(np.int64)
  odd = pc.invert(pc.or_(ones, pc.equal(column, "0")))
  for row in np.flatnonzero(odd.to_numpy(zero_copy_only=False)).tolist():  # the slow path
    text = column[row].as_py()
    number = pd.to_numeric(pd.Series([text]), errors="coerce").iloc[0]
    if number in (0, 1):  # "1.0", "0.0", ...
      values[row] = int(number)
    else:
      kind = "unparsable number" if pd.isna(number) else "label outside {0, 1}"
      problems.setdefault(row, (kind, f"column '{label}': '{text}' is not 0 or 1"))
  return values


def _read_numeric(column: pa.Array, name: str,
                  problems: Dict[int, Tuple[str, str]]) -> np.ndarray:
  """A numeric column as float64 of float32 values (NaN where missing or beyond float32), as
  `read_numbers` reads it; a row holding something that is not a number goes to `problems`."""
  try:  # the fast path: every field a number pyarrow reads, or empty
    present = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    values = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):
      values = values.astype(np.float32)
    values[~np.isfinite(values)] = np.nan
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    values, bad = read_numbers(column.to_pylist())
    for row in np.flatnonzero(bad).tolist():
      problems.setdefault(row, ("unparsable number",
                                f"column '{name}': '{column[row].as_py()}' is not a number"))
  return values.astype(np.float64)


@dataclasses.dataclass
class _Placed:
  """A block's rows with their split and shard (an index over all splits' shards)."""
  valid: ValidRows
  splits: np.ndarray
  shards: np.ndarray
  head: np.ndarray  # per shard: rows that complete the record left open by earlier blocks


def _place(valid: ValidRows, spec: BlockSpec, placer, bad_rows: BadRows, done: "_Written") -> _Placed:
  """Reports the block's bad rows and gives each usable row its split and shard (in order)."""
  _report(valid, bad_rows)
  splits, shards = place_block(valid, spec, placer)
  head = done.take_rows(shards, splits, valid.labels)
  return _Placed(valid, splits, shards, head)


def place_block(valid: ValidRows, spec: BlockSpec, placer) -> Tuple[np.ndarray, np.ndarray]:
  """(split, shard) per usable row: the split from `placer.assign` (blocks in ordinal order,
  see `prepare`'s `split`), the shard within it from the row's shard draw, as an index over
  all splits' shards (`shard_names`' order)."""
  splits = np.asarray(placer.assign(SplitRows(valid.table, valid.file_start, valid.ordinals,
                                              valid.draws)), dtype=np.int64)
  per_split = np.asarray(spec.shards, dtype=np.int64)
  first = np.concatenate([[0], np.cumsum(per_split)[:-1]])
  shards = first[splits] + np.minimum((valid.shard_draws * per_split[splits]).astype(np.int64),
                                      per_split[splits] - 1)
  return splits, shards


def split_totals(splits: np.ndarray, labels: Dict[str, np.ndarray],
                 spec: BlockSpec) -> Tuple[np.ndarray, np.ndarray]:
  """(rows per split, positives per split and task) of a block's placed rows."""
  rows = np.bincount(splits, minlength=len(SPLITS)).astype(np.int64)
  positives = np.zeros((len(SPLITS), len(spec.labels)), dtype=np.int64)
  for t, name in enumerate(spec.labels):
    positives[:, t] = np.bincount(splits, weights=labels[name],
                                  minlength=len(SPLITS)).astype(np.int64)
  return rows, positives


@dataclasses.dataclass
class _Encoded:
  """A block's shard records and counts, ready to write."""
  records: List[bytes]  # the full records of every shard, shard after shard
  record_counts: np.ndarray  # per shard
  heads: Dict[int, Dict[str, object]]  # shard -> columns of the rows before its records
  tails: Dict[int, Dict[str, object]]  # shard -> columns of the rows after them
  value_counts: Dict[str, "ValueCounts"]  # feature -> value counts on the train rows
  moments: Dict[str, "ExactMoments"]


def _encode(placed: _Placed, spec: BlockSpec) -> _Encoded:
  """Counts the train rows' values and encodes the block's records (see `_Written`)."""
  valid, rpr = placed.valid, spec.rows_per_record
  counting = time.perf_counter()
  columns = record_columns(valid.table, valid.numbers, valid.labels, spec)
  value_counts, moments = count_train(columns, placed.splits == 0, spec)
  spec.timed.add("count", time.perf_counter() - counting)
  encoding = time.perf_counter()
  order = np.argsort(placed.shards, kind="stable")
  counts = np.bincount(placed.shards, minlength=sum(spec.shards))
  starts = np.concatenate([[0], np.cumsum(counts)])
  heads, tails, middle, record_counts = {}, {}, [], np.zeros(len(counts), dtype=np.int64)
  for shard in np.flatnonzero(counts).tolist():
    start, stop = int(starts[shard]), int(starts[shard + 1])
    head = min(int(placed.head[shard]), stop - start)
    full = (stop - start - head) // rpr * rpr
    if head:
      heads[shard] = _take(columns, order[start:start + head])
    if full:
      middle.append(order[start + head:start + head + full])
      record_counts[shard] = full // rpr
    if start + head + full < stop:
      tails[shard] = _take(columns, order[start + head + full:stop])
  records = (encode_records(_take(columns, np.concatenate(middle)), rpr) if middle else [])
  spec.timed.add("encode", time.perf_counter() - encoding)
  return _Encoded(records, record_counts, heads, tails, value_counts, moments)


def record_columns(table: pa.Table, numbers: Dict[str, np.ndarray],
                   labels: Dict[str, np.ndarray], spec: BlockSpec) -> Dict[str, object]:
  """Rows as the columns `encode_records` takes: `table`'s features as strings (lists of
  strings if multivalent), then `numbers` (float64), then `labels` (int64), in
  `spec.columns` order."""
  columns: Dict[str, object] = {}
  for name in spec.features:
    values = _array(table[name])
    if values.type != pa.string():
      values = pc.cast(values, pa.string())
    columns[name] = (_split_lists(values, spec.multivalent[name])
                     if name in spec.multivalent else values)
  for name in spec.numeric:
    columns[name] = np.asarray(numbers[name], dtype=np.float64)
  for name in spec.labels:
    columns[name] = np.asarray(labels[name], dtype=np.int64)
  return columns


def count_train(columns: Dict[str, object], train: np.ndarray, spec: BlockSpec
                ) -> Tuple[Dict[str, "ValueCounts"], Dict[str, "ExactMoments"]]:
  """The value counts of each feature and the moments of each numeric feature (their signed
  log for `log1p` ones) over the rows where `train` is True; `columns` as `record_columns`
  gives them. Vocabularies are counted on the train split only."""
  in_train = pa.array(np.asarray(train, dtype=bool))
  value_counts = {}
  for name in spec.features:
    values = columns[name].filter(in_train)
    if name in spec.multivalent:
      values = pc.list_flatten(values)
    value_counts[name] = ValueCounts.of(pc.value_counts(values))
  moments = {}
  for name in spec.numeric:
    values = columns[name][train]
    moments[name] = ExactMoments.of(_signed_log(values) if name in spec.log1p else values)
  return value_counts, moments


def _take(columns: Dict[str, object], rows: np.ndarray) -> Dict[str, object]:
  return {name: values.take(pa.array(rows)) if isinstance(values, pa.Array) else values[rows]
          for name, values in columns.items()}


def _split_lists(values: pa.Array, separator: str) -> pa.Array:
  """A multivalent column as lists of strings: split on `separator`; "" is an empty list."""
  lists = pc.split_pattern(values, separator)
  empty = pc.equal(values, "").to_numpy(zero_copy_only=False)
  if not empty.any():
    return lists
  lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
  keep = np.repeat(~empty, lengths)  # an empty field split is [""]: drop that value
  lengths = np.where(empty, 0, lengths)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
  return pa.ListArray.from_arrays(pa.array(offsets),
                                  pc.list_flatten(lists).filter(pa.array(keep)))


class _Written:
  """The writing side, in block order: shard records, row and positive counts, vocabulary
  counts and numeric moments.

  A shard's records are `rows_per_record` consecutive rows of it. A block's rows
  of a shard start with the `head` rows that complete the record the earlier
  blocks left open (`take_rows`, in block order, before the block is encoded),
  then full records (encoded in parallel), then the tail that the next block
  completes; so the records are those a single writer of the rows in ordinal
  order would write, however the input is cut.
  """

  def __init__(self, spec: BlockSpec, writers: List["_RecordWriter"]):
    self.spec, self.writers = spec, writers
    self.open_rows = np.zeros(len(writers), dtype=np.int64)  # rows of the open record, by take_rows
    self.pending: List[List[Dict[str, object]]] = [[] for _ in writers]
    self.rows = np.zeros(len(SPLITS), dtype=np.int64)
    self.positives = np.zeros((len(SPLITS), len(spec.labels)), dtype=np.int64)
    self.counts = {name: ValueCounts() for name in spec.features}
    self.moments = {name: ExactMoments() for name in spec.numeric}

  def take_rows(self, shards: np.ndarray, splits: np.ndarray,
                labels: Dict[str, np.ndarray]) -> np.ndarray:
    """Counts a block's rows; returns per shard the rows that complete its open record."""
    rpr = self.spec.rows_per_record
    rows, positives = split_totals(splits, labels, self.spec)
    self.rows += rows
    self.positives += positives
    head = (rpr - self.open_rows) % rpr
    self.open_rows = (self.open_rows + np.bincount(shards, minlength=len(self.writers))) % rpr
    return head

  def add(self, encoded: _Encoded) -> None:
    rpr, at = self.spec.rows_per_record, 0
    for shard, writer in enumerate(self.writers):
      if shard in encoded.heads:
        self.pending[shard].append(encoded.heads[shard])
        if sum(_length(p) for p in self.pending[shard]) == rpr:
          self._flush(shard)
      n = int(encoded.record_counts[shard])
      if n:
        writer.write(encoded.records[at:at + n])
        at += n
      if shard in encoded.tails:
        self.pending[shard].append(encoded.tails[shard])
    for name, counts in encoded.value_counts.items():
      self.counts[name].merge(counts)
    for name, moments in encoded.moments.items():
      self.moments[name].merge(moments)

  def flush(self) -> None:
    """Writes each shard's last, partial record."""
    for shard in range(len(self.writers)):
      if self.pending[shard]:
        self._flush(shard)

  def _flush(self, shard: int) -> None:
    parts, self.pending[shard] = self.pending[shard], []
    columns = {name: (pa.concat_arrays([p[name] for p in parts])
                      if isinstance(parts[0][name], pa.Array)
                      else np.concatenate([p[name] for p in parts])) for name in parts[0]}
    self.writers[shard].write(encode_records(columns, self.spec.rows_per_record))


def _length(columns: Dict[str, object]) -> int:
  return len(next(iter(columns.values())))


class ValueCounts:
  """A feature's value counts, merged block by block (or worker by worker, as a Beam
  combiner's accumulator): parts are kept as they come and summed by a pyarrow group-by
  when they outgrow the merged table. Exact integer sums: the result does not depend on
  the order of the merges."""

  def __init__(self):
    self._merged = pa.table({"values": pa.array([], pa.string()),
                             "counts": pa.array([], pa.int64())})
    self._parts: List[pa.Table] = []
    self._part_rows = 0
    self._vocabulary: Tuple[Optional[int], List[str]] = (None, [])  # (min_count, values)

  @classmethod
  def of(cls, counts: pa.StructArray) -> "ValueCounts":
    """The counts `pyarrow.compute.value_counts` returns."""
    made = cls()
    made.add(counts)
    return made

  def add(self, counts: pa.StructArray) -> None:
    """Adds a `pyarrow.compute.value_counts` result."""
    self._add_table(pa.table({"values": counts.field("values").cast(pa.string()),
                              "counts": counts.field("counts")}))

  def merge(self, other: "ValueCounts") -> None:
    """Adds `other`'s counts."""
    self._add_table(other.table())

  def table(self) -> pa.Table:
    """The counts as a table of "values" (string) and "counts" (int64), one row a value."""
    self._merge()
    return self._merged

  def at_least(self, min_count: int) -> "ValueCounts":
    """The counts of the values seen at least `min_count` times."""
    table = self.table()
    kept = ValueCounts()
    kept._add_table(table.filter(pc.greater_equal(table["counts"], min_count)))
    return kept

  def _add_table(self, table: pa.Table) -> None:
    self._vocabulary = (None, [])
    self._parts.append(table)
    self._part_rows += table.num_rows
    if self._part_rows > max(1 << 20, 2 * self._merged.num_rows):
      self._merge()

  def _merge(self) -> None:
    if not self._parts:
      return
    table = pa.concat_tables([self._merged, *self._parts])
    self._merged = table.group_by("values").aggregate([("counts", "sum")]).rename_columns(
        ["values", "counts"])
    self._parts, self._part_rows = [], 0

  def vocabulary(self, min_count: int) -> List[str]:
    """Values seen at least `min_count` times, but "", most frequent first, ties in value
    order (the UTF-8 bytes' order, which is Python's order of the strings)."""
    if self._vocabulary[0] == min_count:
      return self._vocabulary[1]
    self._merge()
    kept = self._merged.filter(pc.and_(pc.greater_equal(self._merged["counts"], min_count),
                                       pc.not_equal(self._merged["values"], "")))
    kept = kept.sort_by([("counts", "descending"), ("values", "ascending")])
    self._vocabulary = (min_count, kept["values"].to_pylist())
    return self._vocabulary[1]

  def kept(self, min_count: int) -> bool:
    """Whether any value but "" is seen at least `min_count` times."""
    return bool(self.vocabulary(min_count))


class ExactMoments:
  """Count, sum and sum of squares of a numeric column's finite values, summed exactly
  (integers scaled by 2^-1200), and their extremes: the mean and std do not depend on
  how the rows are cut into blocks."""

  _SCALE = 1200

  def __init__(self, count: int = 0, total: int = 0, squares: int = 0,
               low: float = math.inf, high: float = -math.inf):
    self.count, self.total, self.squares, self.low, self.high = count, total, squares, low, high

  @classmethod
  def of(cls, values: np.ndarray) -> "ExactMoments":
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
      return cls()
    return cls(len(values), cls._exact_sum(values), cls._exact_sum(values * values),
               float(values.min()), float(values.max()))

  @classmethod
  def _exact_sum(cls, values: np.ndarray) -> int:
    """sum(values) * 2^1200, exactly: mantissas as integers, summed per exponent."""
    mantissas, exponents = np.frexp(values)
    mantissas = (mantissas * 2.0**53).astype(np.int64)  # values = m * 2^(e - 53), exactly
    order = np.argsort(exponents, kind="stable")
    exponents, mantissas = exponents[order], mantissas[order]
    starts = np.flatnonzero(np.concatenate([[True], np.diff(exponents) != 0]))
    high = np.add.reduceat(mantissas >> 26, starts)  # < 2^27 each: no int64 overflow
    low = np.add.reduceat(mantissas & ((1 << 26) - 1), starts)
    total = 0
    for e, h, l in zip(exponents[starts].tolist(), high.tolist(), low.tolist()):
      total += ((h << 26) + l) << (e - 53 + cls._SCALE)
    return total

  def merge(self, other: "ExactMoments") -> None:
    self.count += other.count
    self.total += other.total
    self.squares += other.squares
    self.low, self.high = min(self.low, other.low), max(self.high, other.high)

  def varies(self) -> bool:
    """Whether the values are not all one (and there are some)."""
    return self.count > 1 and self.low < self.high

  def mean_and_std(self) -> Tuple[float, float]:
    """(mean, population std) of the values; the std of values that do not vary is 0."""
    if not self.count:
      return 0.0, 0.0
    mean = fractions.Fraction(self.total, self.count << self._SCALE)
    if not self.varies():
      return float(mean), 0.0
    variance = fractions.Fraction(self.squares, self.count << self._SCALE) - mean * mean
    return float(mean), math.sqrt(max(float(variance), 0.0))


def _signed_log(values: np.ndarray) -> np.ndarray:
  """sign(x) * log(1 + |x|), as `stem_tfrs.layers.NumericInputs` takes it."""
  return np.sign(values) * np.log1p(np.abs(values))


def _write_vocabularies(out_dir: str, counts: Dict[str, "ValueCounts"],
                        min_count: int, multivalent: Dict[str, str]) -> List[CategoricalFeature]:
  os.makedirs(os.path.join(out_dir, "vocab"))
  schema_features = []
  for name, counter in counts.items():
    # "" is a missing value: it shares the OOV row (and a vocabulary file
    # cannot hold an empty line); `ValueCounts.vocabulary` leaves it out.
    kept = counter.vocabulary(min_count)
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


class _RecordWriter:
  """Writes serialized records to one TFRecord shard."""

  def __init__(self, path: str):
    with _writing():
      self._writer = tf.io.TFRecordWriter(path)

  def write(self, records: Sequence[bytes]) -> None:
    with _writing():
      for record in records:
        self._write_record(record)

  def _write_record(self, record: bytes) -> None:
    self._writer.write(record)

  def close(self) -> None:
    with _writing():
      self._writer.close()


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


class _ShardWriter:
  """Writes rows to one TFRecord shard, `rows_per_record` rows a record, building each
  `tf.train.Example` value by value: the reference `stem_tfrs.data.records.encode_records` is
  tested against (tests/test_records.py, benchmarks/record_encoding.py); `prepare` writes
  `encode_records`' records with `_RecordWriter`."""

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


def _close_all(writers: Iterable) -> None:
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
