"""Examples/s of the training input pipeline alone (no model), per core and on every core.

    python benchmarks/input_pipeline.py [--rows 1000000] [--batch 4096] [--seconds 4]
                                        [--repeats 5] [--cores 1,all] [--compare_with REV]
                                        [--output FILE.json]

Writes a prepared data set of `--rows` generated TikTok rows (the authors' 9
categorical features uid, user_city, item_id, author_id, item_city, channel,
music_id, device_id, video_duration as raw string ids, drawn with the skew and
cardinalities of `benchmarks/data_prep.py`; tasks finish and like) straight
into train shards of 64-row `tf.train.Example` blocks, the record format of
`stem_tfrs/data/schema.py` (each shard's last block holds the rows left). Then
times `make_dataset`'s training pipeline on it (shuffled, seeded, full
batches of `--batch`, repeated) in a child process per core count: "1" pins
the child to one CPU (`sched_setaffinity`) with tf.data's private threadpool
of one thread, "all" gives it every CPU this process may use. Batches are
pulled inside a `tf.function`, as Keras pulls them. Each interval of
`--seconds` starts a fresh iterator and warms it past the first shuffle
window; with `--compare_with`, the pipeline of `stem_tfrs/data/pipeline.py` at that
git revision runs in turns with the checked-out one, so that both see the
same phases of a shared machine. The report holds every interval's
examples/s and examples per CPU-second of the child (every thread's CPU
time: on a machine shared with other work this moves less than the wall
clock), their medians, and the median per core.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FEATURES = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "music_id",
            "device_id", "video_duration"]
TASKS = ["finish", "like"]
ROWS_PER_RECORD = 64


def _raw_data_module():
  """benchmarks/data_prep.py (its name is also the data_prep package's, first on the path)."""
  spec = importlib.util.spec_from_file_location("raw_tiktok", os.path.join(HERE, "data_prep.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_dataset(out_dir: str, rows: int, shards: int, seed: int = 0,
                  min_count: int = 10) -> None:
  """A prepared data set of `rows` generated TikTok rows: train shards, vocabularies, schema."""
  import tensorflow as tf
  from stem_tfrs.data.schema import CategoricalFeature, Schema

  cardinalities = _raw_data_module().CARDINALITIES
  rng = np.random.default_rng(seed)
  columns = {name: ((rng.zipf(1.3, rows) - 1) % cardinalities[name]).astype(np.int64)
             for name in FEATURES}
  columns["finish"] = (rng.random(rows) < 0.3).astype(np.int64)
  columns["like"] = (rng.random(rows) < 0.01).astype(np.int64)
  os.makedirs(os.path.join(out_dir, "vocab"))
  features = []
  for name in FEATURES:
    values, counts = np.unique(columns[name], return_counts=True)
    order = np.lexsort((values, -counts))  # most frequent first, ties by value
    kept = values[order][counts[order] >= min_count]
    path = os.path.join("vocab", f"{name}.txt")
    with open(os.path.join(out_dir, path), "w") as f:
      f.writelines(f"{v}\n" for v in kept)
    features.append(CategoricalFeature(name=name, vocabulary_file=path,
                                       vocabulary_size=len(kept)))
  strings = {name: np.char.encode(columns[name].astype(str)) for name in FEATURES}
  names = [f"train-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
  bounds = np.linspace(0, rows, shards + 1).astype(int)
  for name, first, end in zip(names, bounds[:-1], bounds[1:]):
    with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
      for start in range(first, end, ROWS_PER_RECORD):
        stop = min(start + ROWS_PER_RECORD, end)
        feature = {n: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=strings[n][start:stop].tolist())) for n in FEATURES}
        feature.update({t: tf.train.Feature(int64_list=tf.train.Int64List(
            value=columns[t][start:stop].tolist())) for t in TASKS})
        writer.write(tf.train.Example(
            features=tf.train.Features(feature=feature)).SerializeToString())
  Schema(features=features, labels=TASKS, group_column="uid", splits={"train": names},
         rows_per_record=ROWS_PER_RECORD).save(out_dir)
  with open(os.path.join(out_dir, "stats.json"), "w") as f:
    json.dump({"train": {"rows": rows}}, f)


def _data_module(revision: Optional[str], work: str):
  """stem_tfrs.data.pipeline as checked out, or as of git `revision` (its other imports: today's).

  The revision's file is written into `work`, which must outlive the module.
  """
  if revision is None:
    from stem_tfrs.data import pipeline
    return pipeline
  for where in ("stem_tfrs/data/pipeline.py", "stem_tfrs/data.py"):  # the file before the move
    shown = subprocess.run(["git", "show", f"{revision}:{where}"], cwd=REPO,
                           capture_output=True, text=True)
    if shown.returncode == 0:
      break
  else:
    raise SystemExit(f"error: git revision {revision} has no tf.data pipeline: {shown.stderr.strip()}")
  source = shown.stdout
  # A revision before stem_tfrs/data/ existed imports the schema as stem_tfrs.schema.
  from stem_tfrs.data import schema
  sys.modules.setdefault("stem_tfrs.schema", schema)
  path = os.path.join(work, "data_at_revision.py")
  with open(path, "w") as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location("stem_tfrs_data_at_revision", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # autograph reads the functions' source through it
  spec.loader.exec_module(module)
  return module


def _interval(data, schema, rows: int, batch: int, seconds: float,
              threads: int) -> Tuple[float, float]:
  """(examples/s, examples per CPU-second of this process) over one interval, after warm-up.

  A fresh iterator each time, warmed past the first shuffle window; batches
  are pulled inside a `tf.function`, as Keras' `fit` pulls them, so no
  Python object is made per batch.
  """
  import tensorflow as tf
  dataset = data.make_dataset(schema, "train", batch, shuffle=True, seed=0,
                              drop_remainder=True).repeat()
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(dataset.with_options(options))

  @tf.function
  def pull(steps):
    examples = tf.constant(0, tf.int64)
    for _ in tf.range(steps):
      examples += tf.shape(next(iterator)[1][TASKS[0]], out_type=tf.int64)[0]
    return examples

  warm = 0
  while warm < 2 * min(100_000, rows) + batch:  # past the shuffle buffer's first fill
    warm += int(pull(4))
  examples, start, cpu = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    examples += int(pull(4))
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  return examples / wall, examples / cpu


def measure(data_dir: str, batch: int, seconds: float, repeats: int, threads: int,
            revisions: List[Optional[str]]) -> Dict[str, dict]:
  """Each pipeline's intervals, in turns (one of each per round), in this process."""
  from stem_tfrs.data.schema import Schema, load_stats

  schema = Schema.load(data_dir)
  rows = load_stats(data_dir)["train"]["rows"]
  work = os.path.dirname(os.path.abspath(data_dir))  # the benchmark's, removed after
  modules = {revision or "current": _data_module(revision, work) for revision in revisions}
  rates = {name: [] for name in modules}
  for _ in range(repeats):
    for name, module in modules.items():
      rates[name].append(_interval(module, schema, rows, batch, seconds, threads))
  return {name: {"examples_per_second": [round(wall) for wall, _ in pairs],
                 "examples_per_cpu_second": [round(cpu) for _, cpu in pairs]}
          for name, pairs in rates.items()}


def run_child(data_dir: str, cores: str, args) -> dict:
  """`measure` in a child process limited to one CPU ("1") or to every CPU ("all")."""
  result = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--child", data_dir, f"--cores={cores}",
       f"--batch={args.batch}", f"--seconds={args.seconds}", f"--repeats={args.repeats}"] +
      ([f"--compare_with={args.compare_with}"] if args.compare_with else []),
      capture_output=True, text=True, cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  if result.returncode != 0:
    sys.exit(f"the pipeline run on {cores} core(s) failed:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def child(data_dir: str, cores: str, args) -> None:
  available = sorted(os.sched_getaffinity(0))
  if cores == "all":
    cpus = available
  else:
    cpus = available[:int(cores)]
    os.sched_setaffinity(0, cpus)  # before TensorFlow starts a thread
  sys.path.insert(0, REPO)
  import stem_tfrs  # noqa: F401  (Keras 2 first)
  pipelines = measure(data_dir, args.batch, args.seconds, args.repeats, threads=len(cpus),
                      revisions=[None] + ([args.compare_with] if args.compare_with else []))
  print(json.dumps({"cores": len(cpus), "pipelines": pipelines}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=1_000_000, help="Generated train rows.")
  parser.add_argument("--shards", type=int, default=8, help="Train shards.")
  parser.add_argument("--batch", type=int, default=4096, help="Examples per batch.")
  parser.add_argument("--seconds", type=float, default=4.0, help="Length of a timed interval.")
  parser.add_argument("--repeats", type=int, default=5, help="Timed intervals per core count.")
  parser.add_argument("--cores", default="1,all",
                      help="Comma-separated core counts to run on: a number, or 'all'.")
  parser.add_argument("--workdir", default=None, help="Where the data set goes (default: a "
                      "temporary directory, removed afterwards).")
  parser.add_argument("--output", default="benchmarks/results/input_pipeline.json")
  parser.add_argument("--compare_with", default=None,
                      help="Also time stem_tfrs/data/pipeline.py as of this git revision, in turns with "
                           "the checked-out one (same data, same processes).")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  counts = args.cores.split(",")
  bad = [c for c in counts if c != "all" and not (c.isdigit() and int(c) >= 1)]
  if bad or args.rows < 1 or args.shards < 1 or args.batch < 1:
    parser.error(f"--cores takes numbers >= 1 or 'all', got {args.cores!r}; --rows, --shards "
                 f"and --batch must be >= 1, got {args.rows}, {args.shards}, {args.batch}")
  if args.child is not None:
    child(args.child, args.cores, args)
    return
  too_many = [c for c in counts if c != "all" and int(c) > len(os.sched_getaffinity(0))]
  if too_many:
    parser.error(f"--cores {too_many}: this process may use {len(os.sched_getaffinity(0))} CPUs")

  revision = None
  if args.compare_with:
    found = subprocess.run(["git", "rev-parse", "--verify", f"{args.compare_with}^{{commit}}"],
                           cwd=REPO, capture_output=True, text=True)
    if found.returncode != 0:
      parser.error(f"--compare_with {args.compare_with!r} is no git revision of {REPO}")
    revision = found.stdout.strip()

  sys.path.insert(0, REPO)
  import stem_tfrs  # noqa: F401
  from machine import describe, write_report  # benchmarks/machine.py

  with tempfile.TemporaryDirectory(dir=args.workdir) as work:
    data_dir = os.path.join(work, "tiktok")
    start = time.perf_counter()
    write_dataset(data_dir, args.rows, args.shards)
    write_seconds = time.perf_counter() - start
    runs = []
    for cores in counts:
      run = run_child(data_dir, cores, args)
      for name, figures in run["pipelines"].items():
        for key in ("examples_per_second", "examples_per_cpu_second"):
          figures[f"median_{key}"] = round(statistics.median(figures[key]))
        figures["median_examples_per_second_per_core"] = round(
            figures["median_examples_per_second"] / run["cores"])
        print(f"{name}, {run['cores']} core(s): {figures['median_examples_per_second']:,} "
              f"examples/s ({figures['median_examples_per_second_per_core']:,} per core), "
              f"{figures['median_examples_per_cpu_second']:,} per CPU-second; medians of "
              f"{figures['examples_per_second']} and {figures['examples_per_cpu_second']}")
      runs.append(run)
  report = {"rows": args.rows, "shards": args.shards, "rows_per_record": ROWS_PER_RECORD,
            "batch": args.batch, "features": FEATURES, "tasks": TASKS,
            "pipeline": "records, shuffled (seed 0), drop_remainder, repeated",
            "compare_with": revision,
            "seconds_per_interval": args.seconds, "write_seconds": round(write_seconds, 1),
            "runs": runs, "machine": describe()}
  write_report(args.output, report)
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
