"""The data preparation as an Apache Beam pipeline: `--runner=DirectRunner|DataflowRunner|...`.

`python -m data_prep.tiktok --raw=DIR --out=OUT --runner=DirectRunner
--beam_options="--direct_num_workers=2 --direct_running_mode=multi_processing"`
(or `python main.py prepare --dataset=tiktok ... --runner=...`) writes the
data set the local path writes: the same files, vocabularies, split sizes,
stats.json and bad_rows.json, and shards of the same rows in the same order.
How to run it on Dataflow, Flink or Spark, and what limits its scaling:
docs/beam.md.

Design decision: a thin driver over the local path's core
(`data_prep.writer`, `data_prep.readers`, `stem_tfrs.data.records`), never a second
implementation of parsing, validation, counting or encoding. What to read is
the loader's own `writer.Layout` (`tiktok.layout`, ...). One element per
input file; a file's blocks are validated, split and counted by the writer's
public per-block functions (`validate_block`, `place_block`, `count_train`,
...), and every decision is keyed on
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
   ordinal, encoded by `stem_tfrs.data.records.encode_records` and written
   to `<tmp>/<split>-XXXXX-of-YYYYY.tfrecord`: the records the local path
   writes, byte for byte.

The pipeline saves its small results (vocabulary counts past `min_count`,
moments, row counts, bad rows, errors) beside the shards; the driver then
hands them to `writer.finish`, as the local path does: the checks, vocab/,
schema.json, stats.json and bad_rows.json in the same temporary sibling of
`--out`, and the rename into place: a failed run leaves
no data set. So the input and `--out` must be paths that the workers and the
driver see alike (a shared file system; the local disk with the DirectRunner).
A bad input is still one line: a worker's `DataError` is saved, not raised,
and the driver raises the earliest one (by file) after the pipeline. With
`--strict` the earliest bad row (by file, line) is the error, once every file
has been read. The per-file reading limits parallelism to the number of
files (docs/beam.md).
"""

from __future__ import annotations

# The per-block steps and the finish are data_prep.writer's public functions (validate_block,
# place_block, split_totals, record_columns, count_train, ValueCounts, finish); what is still
# private here is `_writing` (a failed write as one error) and the record writer, which
# `writer.prepare` uses as they are.
# pylint: disable=protected-access

import os
import pickle
import shlex
import shutil
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import fn_api_runner
import numpy as np
import pyarrow as pa

from data_prep import readers, writer
from stem_tfrs.data.records import encode_records
from stem_tfrs.data.schema import SPLITS

#: Loaders whose rows `read_blocks` reads as they are; the others join feature tables in pandas.
LOADERS = ("tiktok", "qkvideo", "logs")
_RESULTS = ".beam"  # the pipeline's results, inside the temporary sibling; removed before rename
_ORDINAL = "__ordinal"
_WRITE_FAILED = -1  # the position of an error that is a failed write, not a file's


Layout = writer.Layout  # what to read and what to make of it: the loaders' own


def _shard_names(layout: Layout) -> List[str]:
  """Every shard's file name, split after split (a shard's global index is its position)."""
  return [n for names in writer.shard_names(layout.spec()).values() for n in names]


def loader_layout(name: str, raw: str, *, tasks: Optional[Sequence[str]] = None,
                  min_count: Optional[int] = None, seed: Optional[int] = None,
                  rows_per_record: int = writer.ROWS_PER_RECORD, **own) -> Layout:
  """Loader `name`'s layout (one of `LOADERS`): its module's `layout(raw, ...)`, which its
  local `prepare_<name>` reads too.

  Args:
    name: The loader.
    raw: Its input: a file, a directory or a glob of part files.
    tasks, min_count, seed, rows_per_record: As for the loader (its defaults
      when None).
    **own: The flags of its own (`--dataset=logs`: features, sep, split, ...;
      `sep` and `multivalent` as the flags spell them).

  Raises:
    DataError: a loader that reads joined feature tables (kuairand, movielens).
  """
  if name not in LOADERS:
    raise writer.DataError(f"--runner: {name} is not prepared on Beam (its feature tables are "
                           f"joined in pandas); Beam prepares {', '.join(LOADERS)}. Run it "
                           "without --runner")
  if name == "logs":
    from data_prep import logs  # pylint: disable=g-import-not-at-top
    if "sep" in own:
      own["sep"] = logs.separator(own["sep"])
    if own.get("multivalent") is not None and not isinstance(own["multivalent"], dict):
      own["multivalent"] = logs.parse_multivalent(own["multivalent"])
    return logs.layout(raw, tasks=tasks,
                       min_count=logs.DEFAULT_MIN_COUNT if min_count is None else min_count,
                       seed=logs.DEFAULT_SEED if seed is None else seed,
                       rows_per_record=rows_per_record, **own)
  if name == "tiktok":
    from data_prep import tiktok as module  # pylint: disable=g-import-not-at-top
  else:
    from data_prep import qkvideo as module  # pylint: disable=g-import-not-at-top
  return module.layout(raw, tasks=tasks, min_count=min_count, seed=seed,
                       rows_per_record=rows_per_record)


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
  writer.check_arguments(features=layout.features, labels=layout.labels,
                         numeric=layout.numeric, group_column=layout.group_column,
                         multivalent=layout.multivalent, log1p=layout.log1p,
                         min_count=layout.min_count, rows_per_record=layout.rows_per_record)
  options = PipelineOptions(shlex.split(beam_options or "") + [f"--runner={runner}"])
  bad_rows = bad_rows if bad_rows is not None else writer.BadRows(strict=True)
  paths = readers.list_inputs(layout.raw)  # as `read_blocks` lists them
  listed = not isinstance(layout.raw, str) or len(paths) != 1 or paths[0] != layout.raw
  with writer.temporary_output(out_dir, overwrite, layout.inputs) as (out_dir, tmp):
    with writer._writing():
      os.makedirs(os.path.join(tmp, _RESULTS))
    files = [(position, [path] if listed else path) for position, path in enumerate(paths)]
    with beam.Pipeline(runner=_runner(runner), options=options) as pipeline:
      _build(pipeline, layout, files, tmp)
    stats = _finish(layout, tmp, out_dir, bad_rows, overwrite)
  return stats


def _runner(name: str):
  """The runner `name` says; for "DirectRunner", Beam's FnApiRunner itself.

  Beam's DirectRunner (2.68 and later) first tries its Prism runner, which it
  downloads at run time: a download we never make, and a runner that ignores
  `--direct_running_mode`. Its FnApiRunner, which it falls back to, runs the
  pipeline here, in the worker processes `--direct_num_workers` and
  `--direct_running_mode=multi_processing` ask for.
  """
  if name != "DirectRunner":
    return None  # Beam resolves the name from --runner
  return fn_api_runner.FnApiRunner()


def _build(pipeline: beam.Pipeline, layout: Layout, files: List[Tuple[int, object]],
           tmp: str) -> None:
  """The pipeline's stages (see the module docstring); results saved under `tmp`."""
  inputs = (pipeline | "Files" >> beam.Create(files) | "Spread" >> beam.Reshuffle())
  starts, group_rows, errors = _counted(inputs, layout)
  placed = inputs | "Place" >> beam.ParDo(_PlaceBlocks(layout), starts, group_rows).with_outputs(
      "counts", "moments", "totals", "bad", "errors", main="rows")
  errors.append(placed.errors)
  written = (placed.rows | "ByShard" >> beam.GroupByKey()
             | "Write" >> beam.ParDo(_WriteShard(layout, tmp)).with_outputs("errors", main="done"))
  errors.append(written.errors)
  _save(placed, written, errors, layout, os.path.join(tmp, _RESULTS))


def _counted(inputs: beam.PCollection, layout: Layout) -> Tuple[object, object, list]:
  """The counting stages over the files `inputs`: (each file's first row ordinal, as a side
  input; usable rows per (ordinal group, file start) for a split that counts them first,
  else None; the error collections so far)."""
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
  return starts, group_rows, errors


def _save(placed, written, errors: list, layout: Layout, results: str) -> None:
  """The stages that merge what the blocks and shards add up to and save it under `results`
  (`_finish` reads it)."""
  saves = {
      "counts": (placed.counts | "SumCounts" >> beam.CombinePerKey(_Merged(writer.ValueCounts))
                 | "MinCount" >> beam.Map(_at_least, layout.min_count)),
      "moments": (placed.moments
                  | "SumMoments" >> beam.CombinePerKey(_Merged(writer.ExactMoments))),
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
    self._spec = self._layout.spec()  # pylint: disable=attribute-defined-outside-init

  def _blocks(self, path, bad_rows: writer.BadRows) -> Iterator[readers.Block]:
    return self._layout.read(bad_rows, path)


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
        valid = writer.validate_block(block, file_start, ordinal, self._spec, draws=False)
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
    totals = np.zeros((len(SPLITS), 1 + len(spec.labels)), dtype=np.int64)
    try:
      for block in self._blocks(path, bad):
        valid = writer.validate_block(block, file_start, ordinal, spec)
        ordinal += block.table.num_rows
        writer.report_bad_rows(valid, bad)
        if not valid.table.num_rows:
          continue
        splits, shards = writer.place_block(valid, spec, placer)
        rows, positives = writer.split_totals(splits, valid.labels, spec)
        totals[:, 0] += rows
        totals[:, 1:] += positives
        columns = writer.record_columns(valid.table, valid.numbers, valid.labels, spec)
        value_counts, moments = writer.count_train(columns, splits == 0, spec)
        for name, counts in value_counts.items():
          yield beam.pvalue.TaggedOutput("counts", (name, counts))
        for name, found in moments.items():
          yield beam.pvalue.TaggedOutput("moments", (name, found))
        rows = pa.table({**{name: columns[name] if name not in spec.multivalent
                            else valid.table[name] for name in spec.features},
                         **{name: pa.array(columns[name]) for name in spec.numeric},
                         **{name: pa.array(columns[name]) for name in spec.labels},
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
    columns = writer.record_columns(rows, {n: rows[n].to_numpy() for n in layout.numeric},
                                    {n: rows[n].to_numpy() for n in layout.labels},
                                    layout.spec())
    name = _shard_names(layout)[shard]
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


class _Merged(beam.CombineFn):
  """Accumulators of the core merged in place: `writer.ValueCounts` (value counts, summed) or
  `writer.ExactMoments` (numeric moments, merged exactly); `new` makes an empty one."""

  def __init__(self, new):
    super().__init__()
    self._new = new

  def create_accumulator(self):
    return self._new()

  def add_input(self, accumulator, value):
    accumulator.merge(value)
    return accumulator

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    for other in accumulators[1:]:
      accumulators[0].merge(other)
    return accumulators[0]

  def extract_output(self, accumulator):
    return accumulator


def _at_least(item: Tuple[str, writer.ValueCounts], min_count: int
              ) -> Tuple[str, writer.ValueCounts]:
  """A feature's counts of the values kept at `min_count` (the driver orders them)."""
  name, counts = item
  return name, counts.at_least(min_count)


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
  for kind, (n, examples) in bad.items():
    bad_rows.add_kind(kind, n, [((position, line), where) for position, line, where in examples])
  if errors:  # a file's first (in file order), else a failed write, as `writer.prepare` raises it
    position, message = min(errors, key=lambda error: (error[0] == _WRITE_FAILED, error[0]))
    if position == _WRITE_FAILED:
      raise writer._WriteFailed(message)
    raise writer.DataError(message)
  totals = _load(tmp, "totals").get("all")
  if totals is None:
    totals = np.zeros((len(SPLITS), 1 + len(layout.labels)), dtype=np.int64)
  counted = writer.Counted(totals[:, 0], totals[:, 1:], _load(tmp, "counts"),
                           _load(tmp, "moments"))
  shutil.rmtree(os.path.join(tmp, _RESULTS))
  return writer.finish(tmp, out_dir, counted, layout.spec(),
                       group_column=layout.group_column, min_count=layout.min_count,
                       split=layout.split, bad_rows=bad_rows, overwrite=overwrite,
                       inputs=layout.inputs)
