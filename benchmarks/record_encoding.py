"""Rows/s of shard record serialization: a `tf.train.Example` per record vs `stem_tfrs.data.records`.

    python benchmarks/record_encoding.py [--rows 1000000] [--rows_per_record 64]
                                         [--repeats 2] [--workdir DIR] [--output FILE.json]

Generates `--rows` TikTok rows as the writer holds them (a pandas frame: the
authors' 9 categorical features as raw string ids, drawn with the skew and
cardinalities of `benchmarks/data_prep.py`; 0/1 labels finish and like) and
times two stages of each path, best of `--repeats`:

- "encode": columns -> serialized records. The message path takes the
  Python lists `data_prep.writer._ShardWriter` gets and builds one message a
  record as its `_write_record` does; the array path takes pyarrow/numpy
  columns and calls `stem_tfrs.data.records.encode_records`.
- "shard": the frame -> one shard file. The message path converts the columns
  as `data_prep.writer._write_shards` does and writes through the writer's
  own `_ShardWriter`; the array path converts with `pyarrow.array` and writes
  `encode_records`' records with a `tf.io.TFRecordWriter`.

Both paths must give the same bytes (records and files), or the benchmark
fails. Reports rows/s of each stage and path and the speed-ups, as JSON and
as text.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # the data_prep package, before benchmarks/data_prep.py

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import tensorflow as tf  # noqa: E402

from stem_tfrs.data.records import encode_records  # noqa: E402
from data_prep.writer import _ShardWriter  # noqa: E402
from machine import describe, write_report  # noqa: E402  (benchmarks/)

FEATURES = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "music_id",
            "device_id", "video_duration"]
LABELS = ["finish", "like"]


def _raw_data_module():
  """benchmarks/data_prep.py (its name is also the data_prep package's)."""
  spec = importlib.util.spec_from_file_location("raw_tiktok", os.path.join(HERE, "data_prep.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
  """Generated rows as the writer's frames hold them: object columns of str, int64 labels."""
  cardinalities = _raw_data_module().CARDINALITIES
  rng = np.random.default_rng(seed)
  frame = pd.DataFrame({name: ((rng.zipf(1.3, rows) - 1) % cardinalities[name]).astype(str)
                        for name in FEATURES})
  # object, as `data_prep.writer._as_python_strings` leaves them (not pandas' own str dtype)
  frame = frame.astype({name: object for name in FEATURES})
  frame["finish"] = (rng.random(rows) < 0.3).astype(np.int64)
  frame["like"] = (rng.random(rows) < 0.01).astype(np.int64)
  return frame


def python_columns(frame: pd.DataFrame) -> Dict[str, list]:
  """The frame as `_write_shards` hands it to a `_ShardWriter`: lists of bytes and ints."""
  columns = {n: np.array([v.encode("utf-8") for v in frame[n]], dtype=object).tolist()
             for n in FEATURES}
  columns.update({n: frame[n].to_numpy().tolist() for n in LABELS})
  return columns


def array_columns(frame: pd.DataFrame) -> Dict[str, object]:
  """The frame as `encode_records` takes it."""
  columns = {n: pa.array(frame[n], type=pa.string()) for n in FEATURES}
  columns.update({n: frame[n].to_numpy(dtype=np.int64) for n in LABELS})
  return columns


def message_records(columns: Dict[str, list], rows_per_record: int) -> List[bytes]:
  """One `tf.train.Example` a record, filled value by value, as `_ShardWriter._write_record`."""
  rows = len(columns[LABELS[0]])
  records = []
  for start in range(0, rows, rows_per_record):
    example = tf.train.Example()
    feature = example.features.feature
    for name in FEATURES:
      feature[name].bytes_list.value.extend(columns[name][start:start + rows_per_record])
    for name in LABELS:
      feature[name].int64_list.value.extend(columns[name][start:start + rows_per_record])
    records.append(example.SerializeToString(deterministic=True))
  return records


def message_shard(frame: pd.DataFrame, path: str, rows_per_record: int) -> None:
  writer = _ShardWriter(path, FEATURES, LABELS, {}, rows_per_record)
  writer.write(python_columns(frame))
  writer.close()


def array_shard(frame: pd.DataFrame, path: str, rows_per_record: int) -> None:
  with tf.io.TFRecordWriter(path) as writer:
    for record in encode_records(array_columns(frame), rows_per_record):
      writer.write(record)


def best_seconds(run: Callable[[], object], repeats: int):
  """(fewest seconds of `repeats` runs, the last run's result)."""
  best, result = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = run()
    best = min(best, time.perf_counter() - start)
  return best, result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--rows_per_record", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=2, help="Runs of each; the fastest counts.")
  parser.add_argument("--workdir", default=None, help="Where the shard files go (default: a "
                      "temporary directory, removed afterwards).")
  parser.add_argument("--output", default=os.path.join(HERE, "results", "record_encoding.json"))
  args = parser.parse_args()
  if args.rows < 1 or args.rows_per_record < 1 or args.repeats < 1:
    sys.exit(f"--rows, --rows_per_record and --repeats must be >= 1, got {args.rows}, "
             f"{args.rows_per_record}, {args.repeats}")

  frame = make_frame(args.rows)
  python, arrays = python_columns(frame), array_columns(frame)
  seconds = {}
  seconds["encode_messages"], old = best_seconds(
      lambda: message_records(python, args.rows_per_record), args.repeats)
  seconds["encode_arrays"], new = best_seconds(
      lambda: encode_records(arrays, args.rows_per_record), args.repeats)
  if old != new:
    sys.exit("the two paths serialized different records")
  with tempfile.TemporaryDirectory(dir=args.workdir) as work:
    files = {way: os.path.join(work, f"{way}.tfrecord") for way in ("messages", "arrays")}
    seconds["shard_messages"], _ = best_seconds(
        lambda: message_shard(frame, files["messages"], args.rows_per_record), args.repeats)
    seconds["shard_arrays"], _ = best_seconds(
        lambda: array_shard(frame, files["arrays"], args.rows_per_record), args.repeats)
    with open(files["messages"], "rb") as a, open(files["arrays"], "rb") as b:
      if a.read() != b.read():
        sys.exit("the two paths wrote different shards")
      shard_bytes = os.path.getsize(files["arrays"])

  rates = {stage: {way: round(args.rows / seconds[f"{stage}_{way}"])
                   for way in ("messages", "arrays")} for stage in ("encode", "shard")}
  report = {
      "rows": args.rows, "rows_per_record": args.rows_per_record, "records": len(new),
      "features": FEATURES, "labels": LABELS, "shard_bytes": shard_bytes,
      "repeats": args.repeats,
      "seconds": {k: round(v, 3) for k, v in seconds.items()},
      "rows_per_second": rates,
      "speedup": {stage: round(seconds[f"{stage}_messages"] / seconds[f"{stage}_arrays"], 1)
                  for stage in ("encode", "shard")},
      "machine": describe(),
  }
  write_report(args.output, report)
  for stage in ("encode", "shard"):
    print(f"{stage}: {rates[stage]['messages']:,} rows/s a message a record, "
          f"{rates[stage]['arrays']:,} rows/s with stem_tfrs.data.records "
          f"({report['speedup'][stage]}x)")
  print(f"{args.rows:,} rows, {len(new):,} records of {args.rows_per_record} -> {args.output}")


if __name__ == "__main__":
  main()
