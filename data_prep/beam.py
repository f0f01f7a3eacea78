"""The data preparation as an Apache Beam pipeline: `--runner=DirectRunner|DataflowRunner|...`.

`python -m data_prep.tiktok --raw=DIR --out=OUT --runner=DirectRunner
--beam_options="--direct_num_workers=2 --direct_running_mode=multi_processing"`
(or `python main.py prepare --dataset=tiktok ... --runner=...`) writes the
data set the local path writes: the same files, vocabularies, split sizes,
stats.json and bad_rows.json, and shards of the same rows in the same order.
How to run it on Dataflow, Flink or Spark, and what limits its scaling:
docs/beam.md.

Design decision: a thin driver over the local path's core
(`data_prep.writer`, `data_prep.readers`, `data_prep.records`), never a second
implementation of parsing, validation, counting or encoding. One element per
input file; a file's `read_blocks` stream is validated, split and counted
block by block by the writer's own functions, and every decision is keyed on
the row's ordinal among all the input's rows (as the local path numbers them),
never on which worker got which file:

1. rows: each file's rows, read once, summed in file order into the ordinal
   of each file's first row (a side input);
2. count (only for `ExactSplit`): usable rows per (ordinal group, file start),
   summed by `CombinePerKey`; the split's plan is drawn from them in each worker;
3. place: each block validated (bad rows collected per file), given its
   split and shard, its train rows' values and numeric moments counted;
   per-block counts are summed with `CombinePerKey` (combiner lifting merges
   them on the workers first) and cut at `min_count`;
4. write: the rows of each shard grouped by shard (`GroupByKey`), ordered by
   ordinal, encoded by `data_prep.records.encode_records` and written
   to `<tmp>/<split>-XXXXX-of-YYYYY.tfrecord`: the records the local path
   writes, byte for byte.

The pipeline saves its small results (vocabulary counts past `min_count`,
moments, row counts, bad rows, errors) beside the shards; the driver then
writes vocab/, schema.json, stats.json and bad_rows.json into the same
temporary sibling of `--out` and renames it into place as the local path does
(`writer.check_out`, `_temporary_sibling`, `_replace_dir`): a failed run leaves
no data set. So the input and `--out` must be paths that the workers and the
driver see alike (a shared file system; the local disk with the DirectRunner).
A bad input is still one line: a worker's `DataError` is saved, not raised,
and the driver raises the earliest one (by file) after the pipeline. With
`--strict` the earliest bad row (by file, line) is the error, once every file
has been read. The per-file reading limits parallelism to the number of
files (docs/beam.md).
"""

from __future__ import annotations

# The writer's per-block steps (validate, place, count, finish) are private functions of
# data_prep.writer, and this driver is their second caller: public seams for them would
# replace these uses and the few lines below that repeat `writer.prepare`'s.
# pylint: disable=protected-access

import dataclasses
import os
import pickle
import shlex
import shutil
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import readers, writer
from data_prep.records import encode_records
from stem_tfrs.files import remove_abandoned, write_json
from stem_tfrs.schema import SHARD_BYTES, SPLITS, STATS_FILE, NumericFeature, Schema

#: Loaders whose rows `read_blocks` reads as they are; the others join feature tables in pandas.
LOADERS = ("tiktok", "qkvideo", "logs")
_RESULTS = ".beam"  # the pipeline's results, inside the temporary sibling; removed before rename
_ORDINAL = "__ordinal"
_WRITE_FAILED = -1  # the position of an error that is a failed write, not a file's


@dataclasses.dataclass(frozen=True)
class Layout:
  """What to read and what to make of it: the arguments a loader gives `writer.prepare`,
  with `read_blocks`' instead of its reading function (a worker reads one file)."""
  raw: Union[str, List[str]]  # what the loader gives `read_blocks`: a path, or a list of files
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
  rows_per_record: int = writer.ROWS_PER_RECORD
  num_shards: Dict[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 8, "valid": 2, "test": 2})
  block_bytes: int = readers.BLOCK_BYTES

  @property
  def shard_names(self) -> List[str]:
    """Every shard's file name, split after split (a shard's global index is its position)."""
    return [f"{s}-{i:05d}-of-{self.num_shards[s]:05d}.tfrecord"
            for s in SPLITS for i in range(self.num_shards[s])]

  def writer_spec(self) -> "writer._Spec":
    """The writer's per-block spec (made in each worker: it holds a lock)."""
    return writer._Spec(self.features, self.labels, self.numeric, set(self.log1p),
                        self.multivalent, self.seed, self.rows_per_record,
                        [self.num_shards[s] for s in SPLITS],
                        getattr(self.split, "unplaceable", None), writer._Timings(None))


def loader_layout(name: str, raw: str, *, tasks: Optional[Sequence[str]] = None,
                  min_count: Optional[int] = None, seed: Optional[int] = None,
                  rows_per_record: int = writer.ROWS_PER_RECORD, **own) -> Layout:
  """Loader `name`'s layout (one of `LOADERS`), as its local `prepare_<name>` reads `raw`.

  Args:
    name: The loader.
    raw: Its input: a file, a directory or a glob of part files.
    tasks, min_count, seed, rows_per_record: As for the loader (its defaults
      when None).
    **own: The flags of its own (`--dataset=logs`: features, sep, split, ...).

  Raises:
    DataError: a loader that reads joined feature tables (kuairand, movielens).
  """
  if name not in LOADERS:
    raise writer.DataError(f"--runner: {name} is not prepared on Beam (its feature tables are "
                           f"joined in pandas); Beam prepares {', '.join(LOADERS)}. Run it "
                           "without --runner")
  if name == "logs":
    from data_prep import logs  # pylint: disable=g-import-not-at-top
    made = _logs_layout(raw, tasks=tasks, **own)
    defaults = logs
  elif name == "tiktok":
    from data_prep import tiktok as defaults  # pylint: disable=g-import-not-at-top
    made = Layout(raw, "\t", list(defaults.COLUMNS), [], list(defaults.FEATURES),
                  writer.check_tasks("TikTok", tasks or defaults.TASKS, defaults.TASKS), "uid",
                  writer.ExactSplit(test=0.1, valid_of_rest=0.1), inputs=[raw])
  else:
    from data_prep import qkvideo as defaults  # pylint: disable=g-import-not-at-top
    labels = writer.check_tasks("QK-Video", tasks or defaults.TASKS, defaults.LABEL_COLUMNS)
    made = Layout(raw, ",", None, list(defaults.FEATURES) + labels, list(defaults.FEATURES),
                  labels, "user_id", writer.ExactSplit(test=0.1, valid_of_rest=1 / 9),
                  inputs=[raw])
  return dataclasses.replace(
      made, min_count=defaults.DEFAULT_MIN_COUNT if min_count is None else min_count,
      seed=defaults.DEFAULT_SEED if seed is None else seed, rows_per_record=rows_per_record)


def _logs_layout(raw: str, *, tasks, features, sep, multivalent, numeric=(), log1p=(),
                 group_column=None, split_column=None, valid_from=None, test_from=None,
                 test_fraction=0.1, valid_fraction=0.1) -> Layout:
  """`data_prep.logs.prepare_logs`' arguments, checked as it checks them."""
  from data_prep import logs  # pylint: disable=g-import-not-at-top
  features, tasks = list(features or []), list(tasks or [])
  if not features:
    raise writer.DataError("--features is required: the categorical columns to embed")
  if not tasks:
    raise writer.DataError("--tasks is required: the 0/1 label columns, one per task")
  sep = logs.separator(sep)
  if not sep:
    raise writer.DataError("--sep must not be empty")
  multivalent = (logs.parse_multivalent(multivalent) if not isinstance(multivalent, dict)
                 else dict(multivalent))
  unknown = sorted(set(multivalent) - set(features))
  if unknown:
    raise writer.DataError(f"--multivalent names {unknown}, which are not among --features "
                           f"{features}")
  clash = sorted(name for name, value in multivalent.items() if value in sep or sep in value)
  if clash:
    raise writer.DataError(f"the list separator of {clash} overlaps the field separator "
                           f"{sep!r}: a list is one field, its values split inside it")
  time_split = [split_column, valid_from, test_from]
  if any(v is not None for v in time_split) and not all(v is not None for v in time_split):
    raise writer.DataError("a split by time takes --split_column, --valid_from and --test_from "
                           "together")
  if split_column is not None:
    split = logs.TimeSplit(split_column, str(valid_from), str(test_from))
  else:
    if not (0.0 <= test_fraction < 1.0 and 0.0 <= valid_fraction < 1.0):
      raise writer.DataError(f"--test_fraction and --valid_fraction must be in [0, 1), got "
                             f"{test_fraction} and {valid_fraction}")
    split = writer.RandomSplit(test=test_fraction, valid_of_rest=valid_fraction)
  numeric = list(numeric or [])
  required = list(dict.fromkeys(features + numeric + tasks
                                + ([split_column] if split_column else [])))
  files = logs.raw_files(raw)
  return Layout(files, sep, None, required, features, tasks, group_column, split,
                multivalent=multivalent, numeric=numeric, log1p=list(log1p or []),
                inputs=[raw, *files])


def prepare_on_beam(name: str, raw: str, out_dir: str, *, runner: str, beam_options: str = "",
                    bad_rows: Optional[writer.BadRows] = None, overwrite: bool = False,
                    **kwargs) -> dict:
  """Loader `name`'s preparation of `raw` into `out_dir`, as a Beam pipeline on `runner`.

  Args:
    name: The loader (`LOADERS`).
    raw: Its input.
    out_dir: The data set's directory, as for the local path.
    runner: A Beam runner's name ("DirectRunner", "DataflowRunner", ...).
    beam_options: Beam pipeline options, one command-line string.
    bad_rows: Filled with the bad rows, as the local path fills it.
    overwrite: Replace an existing data set in `out_dir`.
    **kwargs: The loader's other arguments (`loader_layout`).

  Returns:
    The stats written to stats.json.
  """
  return run(loader_layout(name, raw, **kwargs), out_dir, runner=runner,
             beam_options=beam_options, bad_rows=bad_rows, overwrite=overwrite)


def run(layout: Layout, out_dir: str, *, runner: str = "DirectRunner", beam_options: str = "",
        bad_rows: Optional[writer.BadRows] = None, overwrite: bool = False) -> dict:
  """Writes the data set `layout` describes to `out_dir` with a Beam pipeline; returns its stats.

  Raises:
    As `data_prep.writer.prepare`: DataError (one line naming the file and line),
    FileExistsError, OSError (cannot write, nothing left of the output).
  """
  if not isinstance(runner, str) or not runner:
    raise ValueError(f"runner must name a Beam runner, got {runner!r}")
  writer._check_columns(layout.features, layout.numeric, layout.labels, layout.group_column,
                        layout.multivalent, layout.log1p)
  if layout.min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {layout.min_count}")
  if layout.rows_per_record < 1:
    raise ValueError(f"rows_per_record must be >= 1, got {layout.rows_per_record}")
  options = PipelineOptions(shlex.split(beam_options or "") + [f"--runner={runner}"])
  bad_rows = bad_rows if bad_rows is not None else writer.BadRows(strict=True)
  paths = readers.list_inputs(layout.raw)  # as `read_blocks` lists them
  listed = not isinstance(layout.raw, str) or len(paths) != 1 or paths[0] != layout.raw
  out_dir = writer.check_out(out_dir, overwrite, layout.inputs)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  for kind in ("tmp", "old"):  # those of killed runs, as the local path does
    remove_abandoned(parent, f".{os.path.basename(out_dir)}.{kind}-")
  tmp = None
  try:
    with writer._writing():
      tmp = writer._temporary_sibling(out_dir)
      os.makedirs(os.path.join(tmp, _RESULTS))
    files = [(position, [path] if listed else path) for position, path in enumerate(paths)]
    with beam.Pipeline(options=options) as pipeline:
      _build(pipeline, layout, files, tmp)
    stats = _finish(layout, tmp, out_dir, bad_rows, overwrite)
  except BaseException as e:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, writer._WriteFailed):
      raise OSError(f"cannot write {out_dir}: {e}") from None
    raise
  return stats


def _build(pipeline: beam.Pipeline, layout: Layout, files: List[Tuple[int, object]],
           tmp: str) -> None:
  """The pipeline's stages (see the module docstring); results saved under `tmp`."""
  results = os.path.join(tmp, _RESULTS)
  inputs = (pipeline | "Files" >> beam.Create(files) | "Spread" >> beam.Reshuffle())
  counted_rows = inputs | "Rows" >> beam.ParDo(_CountRows(layout)).with_outputs(
      "errors", main="rows")
  starts = beam.pvalue.AsSingleton(
      counted_rows.rows | "RowsList" >> beam.combiners.ToList()
      | "Starts" >> beam.Map(_file_starts))
  errors = [counted_rows.errors]
  group_rows = None
  if getattr(layout.split, "counts_rows_first", False):
    counted = inputs | "Count" >> beam.ParDo(_CountGroups(layout), starts).with_outputs(
        "errors", main="groups")
    group_rows = beam.pvalue.AsDict(counted.groups | "SumGroups" >> beam.CombinePerKey(sum))
    errors.append(counted.errors)
  placed = inputs | "Place" >> beam.ParDo(_PlaceBlocks(layout), starts, group_rows).with_outputs(
      "counts", "moments", "totals", "bad", "errors", main="rows")
  errors.append(placed.errors)
  written = (placed.rows | "ByShard" >> beam.GroupByKey()
             | "Write" >> beam.ParDo(_WriteShard(layout, tmp)).with_outputs("errors", main="done"))
  errors.append(written.errors)

  saves = {
      "counts": (placed.counts | "SumCounts" >> beam.CombinePerKey(_SumCounts())
                 | "MinCount" >> beam.Map(_at_least, layout.min_count)),
      "moments": placed.moments | "SumMoments" >> beam.CombinePerKey(_SumMoments()),
      "totals": (placed.totals | "SumTotals" >> beam.CombineGlobally(_SumArrays())
                 | "TotalsKey" >> beam.Map(lambda total: ("all", total))),
      "bad": (placed.bad | "MergeBad" >> beam.CombineGlobally(_MergeBadRows())
              | "BadKey" >> beam.Map(lambda bad: ("all", bad))),
      "errors": (tuple(errors) | "Errors" >> beam.Flatten()
                 | "ErrorList" >> beam.combiners.ToList()
                 | "ErrorsKey" >> beam.Map(lambda found: ("all", sorted(found)))),
      "written": (written.done | "WrittenList" >> beam.combiners.ToList()
                  | "WrittenKey" >> beam.Map(lambda done: ("all", sorted(done)))),
  }
  for what, collection in saves.items():
    _ = collection | f"Save{what.title()}" >> beam.ParDo(_Save(results, what))


def _file_starts(counted: List[Tuple[int, int]]) -> Dict[int, int]:
  """File position -> the ordinal of its first row: the rows of the files before it."""
  starts, ordinal = {}, 0
  for position, rows in sorted(counted):
    starts[position], ordinal = ordinal, ordinal + rows
  return starts


class _FileBadRows(writer.BadRows):
  """A file's bad rows, never strict (the driver applies `--strict` to all files' earliest),
  keeping each kind's earliest examples with their line numbers."""

  def __init__(self):
    super().__init__(strict=False)
    self.earliest: Dict[str, List[Tuple[int, str]]] = {}

  def add(self, kind: str, source: str, line: int, detail: str) -> None:
    super().add(kind, source, line, detail)
    kept = self.earliest.setdefault(kind, [])
    kept.append((line, f"{source} line {line:,}: {detail}"))
    kept.sort()
    del kept[writer.EXAMPLES_PER_KIND:]


class _FileDoFn(beam.DoFn):
  """Reads one file (element: (position, path argument of `read_blocks`))."""

  def __init__(self, layout: Layout):
    super().__init__()
    self._layout = layout

  def setup(self):
    self._spec = self._layout.writer_spec()  # pylint: disable=attribute-defined-outside-init

  def _blocks(self, path, bad_rows: writer.BadRows) -> Iterator[readers.Block]:
    layout = self._layout
    return readers.read_blocks(path, sep=layout.sep, columns=layout.columns,
                               required=layout.required, bad_rows=bad_rows,
                               block_bytes=layout.block_bytes)


class _CountRows(_FileDoFn):
  """(position, the rows the reader yields from the file)."""

  def process(self, element):
    position, path = element
    rows = 0
    try:
      for block in self._blocks(path, _FileBadRows()):
        rows += block.table.num_rows
    except writer.DataError as e:
      yield beam.pvalue.TaggedOutput("errors", (position, str(e)))
    yield position, rows


class _CountGroups(_FileDoFn):
  """((ordinal group, file start), usable rows): `ExactSplit`'s first pass over one file."""

  def process(self, element, starts):
    position, path = element
    file_start = ordinal = starts[position]
    counts: Dict[Tuple[int, int], int] = {}
    try:
      for block in self._blocks(path, _FileBadRows()):
        valid = writer._valid_rows(block, file_start, ordinal, self._spec, draws=False)
        ordinal += block.table.num_rows
        for key, rows in writer.group_counts(valid.ordinals, file_start).items():
          counts[key] = counts.get(key, 0) + rows
    except writer.DataError as e:
      yield beam.pvalue.TaggedOutput("errors", (position, str(e)))
      return
    yield from counts.items()


class _PlaceBlocks(_FileDoFn):
  """One file's blocks validated, split, sharded and counted.

  Outputs: rows (shard, table of the rows' columns, file and line), counts
  (feature, value counts of the train rows), moments (numeric feature,
  moments of the train rows), totals (rows and positives per split), bad
  (the file's bad rows), errors (position, message).
  """

  def process(self, element, starts, group_rows=None):
    position, path = element
    spec, layout = self._spec, self._layout
    file_start = ordinal = starts[position]
    bad = _FileBadRows()
    placer = (layout.split.plan(dict(group_rows), layout.seed) if group_rows is not None
              else layout.split)
    per_split = np.asarray(spec.shards, dtype=np.int64)
    first_shard = np.concatenate([[0], np.cumsum(per_split)[:-1]])
    totals = np.zeros((len(SPLITS), 1 + len(spec.labels)), dtype=np.int64)
    try:
      for block in self._blocks(path, bad):
        valid = writer._valid_rows(block, file_start, ordinal, spec)
        ordinal += block.table.num_rows
        writer._report(valid, bad)
        if not valid.table.num_rows:
          continue
        splits = np.asarray(placer.assign(writer.SplitRows(valid.table, file_start,
                                                           valid.ordinals, valid.draws)),
                            dtype=np.int64)
        shards = first_shard[splits] + np.minimum(
            (valid.shard_draws * per_split[splits]).astype(np.int64), per_split[splits] - 1)
        totals[:, 0] += np.bincount(splits, minlength=len(SPLITS))
        for t, name in enumerate(spec.labels):
          totals[:, 1 + t] += np.bincount(splits, weights=valid.labels[name],
                                          minlength=len(SPLITS)).astype(np.int64)
        yield from self._counts(valid, splits == 0)
        rows = pa.table({**{name: _strings(valid.table[name]) for name in spec.features},
                         **{name: pa.array(valid.numbers[name], pa.float64())
                            for name in spec.numeric},
                         **{name: pa.array(valid.labels[name], pa.int64())
                            for name in spec.labels},
                         _ORDINAL: pa.array(valid.ordinals, pa.int64())})
        order = np.argsort(shards, kind="stable")
        cuts = np.flatnonzero(np.diff(shards[order])) + 1
        for part in np.split(order, cuts):
          yield int(shards[part[0]]), rows.take(pa.array(part))
    except writer.DataError as e:
      yield beam.pvalue.TaggedOutput("errors", (position, str(e)))
    yield beam.pvalue.TaggedOutput("totals", totals)
    if bad.total:
      yield beam.pvalue.TaggedOutput("bad", (position, dict(bad.counts), bad.earliest))

  def _counts(self, valid, train: np.ndarray):
    """The train rows' value counts and numeric moments, as `writer._encode` counts them."""
    spec, keep = self._spec, pa.array(train)
    for name in spec.features:
      values = writer._array(valid.table[name])
      if name in spec.multivalent:
        values = pc.list_flatten(writer._split_lists(values, spec.multivalent[name]).filter(keep))
      else:
        values = values.filter(keep)
      counts = pc.value_counts(values)
      yield beam.pvalue.TaggedOutput("counts", (name, pa.table(
          {"values": counts.field("values").cast(pa.string()), "counts": counts.field("counts")})))
    for name in spec.numeric:
      values = valid.numbers[name][train]
      yield beam.pvalue.TaggedOutput("moments", (name, writer._ExactMoments.of(
          writer._signed_log(values) if name in spec.log1p else values)))


def _strings(column) -> pa.Array:
  values = writer._array(column)
  return values if values.type == pa.string() else pc.cast(values, pa.string())


class _WriteShard(beam.DoFn):
  """(shard, its rows' tables) -> the shard file: rows in ordinal order, encoded by
  `encode_records`, written by the writer's own record writer."""

  def __init__(self, layout: Layout, tmp: str):
    super().__init__()
    self._layout, self._tmp = layout, tmp

  def process(self, element):
    shard, tables = element
    layout = self._layout
    rows = pa.concat_tables(list(tables)).sort_by(_ORDINAL)
    columns: Dict[str, object] = {}
    for name in layout.features:
      values = writer._array(rows[name])
      columns[name] = (writer._split_lists(values, layout.multivalent[name])
                       if name in layout.multivalent else values)
    for name in layout.numeric:
      columns[name] = rows[name].to_numpy()
    for name in layout.labels:
      columns[name] = rows[name].to_numpy()
    name = layout.shard_names[shard]
    try:
      records = encode_records(columns, layout.rows_per_record)
      out = writer._RecordWriter(os.path.join(self._tmp, name))
      try:
        out.write(records)
      finally:
        out.close()
    except writer._WriteFailed as e:
      yield beam.pvalue.TaggedOutput("errors", (_WRITE_FAILED, str(e)))
      return
    yield shard, rows.num_rows


class _SumCounts(beam.CombineFn):
  """Value counts (tables of values and counts) summed by a pyarrow group-by."""

  def create_accumulator(self):
    return []

  def add_input(self, accumulator, table):
    accumulator.append(table)
    return self._merged(accumulator) if len(accumulator) > 64 else accumulator

  def merge_accumulators(self, accumulators):
    return self._merged([t for accumulator in accumulators for t in accumulator])

  def extract_output(self, accumulator):
    return self._merged(accumulator)[0]

  @staticmethod
  def _merged(tables: List[pa.Table]) -> List[pa.Table]:
    if not tables:
      return [pa.table({"values": pa.array([], pa.string()), "counts": pa.array([], pa.int64())})]
    table = pa.concat_tables(tables)
    return [table.group_by("values").aggregate([("counts", "sum")]).rename_columns(
        ["values", "counts"])]


def _at_least(item: Tuple[str, pa.Table], min_count: int) -> Tuple[str, pa.Table]:
  """A feature's counts of the values kept at `min_count` (the driver orders them)."""
  name, table = item
  return name, table.filter(pc.greater_equal(table["counts"], min_count))


class _SumMoments(beam.CombineFn):
  """Numeric moments merged exactly (`writer._ExactMoments.merge`)."""

  def create_accumulator(self):
    return writer._ExactMoments()

  def add_input(self, accumulator, moments):
    accumulator.merge(moments)
    return accumulator

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    for other in accumulators[1:]:
      accumulators[0].merge(other)
    return accumulators[0]

  def extract_output(self, accumulator):
    return accumulator


class _SumArrays(beam.CombineFn):
  """Row and positive counts per split, summed."""

  def create_accumulator(self):
    return None

  def add_input(self, accumulator, array):
    return array.copy() if accumulator is None else accumulator + array

  def merge_accumulators(self, accumulators):
    found = [a for a in accumulators if a is not None]
    return sum(found[1:], found[0]) if found else None

  def extract_output(self, accumulator):
    return accumulator


class _MergeBadRows(beam.CombineFn):
  """Files' bad rows: counts per kind summed, each kind's earliest examples by (file, line)."""

  def create_accumulator(self):
    return {}

  def add_input(self, accumulator, found):
    position, counts, earliest = found
    return self.merge_accumulators([accumulator, {
        kind: (n, [(position, line, where) for line, where in earliest[kind]])
        for kind, n in counts.items()}])

  def merge_accumulators(self, accumulators):
    merged: Dict[str, Tuple[int, list]] = {}
    for accumulator in accumulators:
      for kind, (n, examples) in accumulator.items():
        total, kept = merged.get(kind, (0, []))
        merged[kind] = (total + n, sorted(kept + examples)[:writer.EXAMPLES_PER_KIND])
    return merged

  def extract_output(self, accumulator):
    return accumulator


class _Save(beam.DoFn):
  """Writes (key, value) elements to `<results>/<what>/<key>.pkl` for the driver."""

  def __init__(self, results: str, what: str):
    super().__init__()
    self._directory = os.path.join(results, what)

  def process(self, element):
    key, value = element
    os.makedirs(self._directory, exist_ok=True)
    path = os.path.join(self._directory, f"{key}.pkl")
    with open(path + ".part", "wb") as f:
      pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".part", path)


def _load(tmp: str, what: str) -> Dict[str, object]:
  """The pipeline's saved results of one kind: key -> value."""
  directory = os.path.join(tmp, _RESULTS, what)
  if not os.path.isdir(directory):
    return {}
  found = {}
  for name in sorted(os.listdir(directory)):
    if name.endswith(".pkl"):
      with open(os.path.join(directory, name), "rb") as f:
        found[name[:-len(".pkl")]] = pickle.load(f)
  return found


def _finish(layout: Layout, tmp: str, out_dir: str, bad_rows: writer.BadRows,
            overwrite: bool) -> dict:
  """After the pipeline: the checks, vocab/, schema.json, stats.json, bad_rows.json (as
  `writer.prepare` writes them), and the rename into place."""
  errors = _load(tmp, "errors").get("all", [])
  bad = _load(tmp, "bad").get("all") or {}
  if bad_rows.strict and bad:  # the earliest bad row, as the local path's strict BadRows raises
    _, kind, where = min((examples[0], kind, examples[0][2])
                         for kind, (n, examples) in bad.items())
    raise writer.DataError(f"{kind}: {where} (without --strict, bad rows are skipped)")
  # The bad rows, as the local path's BadRows holds them: kinds in order of their earliest row.
  for kind, (n, examples) in sorted(bad.items(), key=lambda item: item[1][1][0]):
    bad_rows.counts[kind] = n
    bad_rows.examples[kind] = [where for _, _, where in examples]
  if errors:  # a file's first (in file order), else a failed write, as `writer.prepare` raises it
    position, message = min(errors, key=lambda error: (error[0] == _WRITE_FAILED, error[0]))
    if position == _WRITE_FAILED:
      raise writer._WriteFailed(message)
    raise writer.DataError(message)
  bad_rows.freeze()
  totals = _load(tmp, "totals").get("all")
  if totals is None:
    totals = np.zeros((len(SPLITS), 1 + len(layout.labels)), dtype=np.int64)
  rows, positives = totals[:, 0], totals[:, 1:]
  total = int(rows.sum())
  writer._check_total(total, bad_rows)
  expects_rows = getattr(layout.split, "expects_rows", lambda s: True)
  empty = [name for s, name in enumerate(SPLITS) if not rows[s] and expects_rows(s)]
  if empty:
    raise writer.DataError(f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
                           f"would be empty: none of the {total:,} usable rows falls in "
                           f"{'them' if len(empty) > 1 else 'it'} under {layout.split}")
  saved = _load(tmp, "counts")
  counts = {}
  for name in layout.features:
    counts[name] = writer._ValueCounts()
    if name in saved:
      table = saved[name]
      counts[name].add(pa.StructArray.from_arrays([table["values"].combine_chunks(),
                                                   table["counts"].combine_chunks()],
                                                  names=["values", "counts"]))
  empty = [name for name in layout.features if not counts[name].kept(layout.min_count)]
  if empty:
    raise writer.DataError(f"no value of feature(s) {empty} is seen min_count={layout.min_count} "
                           "times in the train split: lower --min_count, or drop the feature")
  saved = _load(tmp, "moments")
  moments = {name: saved.get(name, writer._ExactMoments()) for name in layout.numeric}
  flat = [name for name in layout.numeric if not moments[name].varies()]
  if flat:
    raise writer.DataError(f"numeric feature(s) {flat} hold no value, or a single one, in the "
                           "train split: the model could not learn from them; drop them")
  shutil.rmtree(os.path.join(tmp, _RESULTS))
  names = layout.shard_names
  with writer._writing():
    for name in names:  # a shard no row went to is an empty file, as the local path leaves it
      if not os.path.exists(os.path.join(tmp, name)):
        writer._RecordWriter(os.path.join(tmp, name)).close()
    schema_features = writer._write_vocabularies(tmp, counts, layout.min_count, layout.multivalent)
  by_split = {s: [n for n in names if n.startswith(f"{s}-")] for s in SPLITS}
  schema = Schema(features=schema_features, labels=layout.labels, group_column=layout.group_column,
                  splits=by_split, rows_per_record=layout.rows_per_record, directory=tmp,
                  numeric_features=[NumericFeature(name, *moments[name].mean_and_std(),
                                                   log1p=name in layout.log1p)
                                    for name in layout.numeric])
  stats = {
      name: {"rows": int(rows[s]),
             "positive_rate": {task: float(positives[s, t] / max(rows[s], 1))
                               for t, task in enumerate(layout.labels)},
             SHARD_BYTES: {n: os.path.getsize(os.path.join(tmp, n)) for n in by_split[name]}}
      for s, name in enumerate(SPLITS)}
  with writer._writing():
    schema.save(tmp)
    for name, content in ((STATS_FILE, stats), (writer.BAD_ROWS_FILE, bad_rows.to_json())):
      write_json(os.path.join(tmp, name), content)
  writer.check_out(out_dir, overwrite, layout.inputs)  # again: what is there now is replaced
  with writer._writing():
    writer._replace_dir(tmp, out_dir)
  return stats
