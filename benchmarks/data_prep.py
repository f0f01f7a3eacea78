"""Throughput and peak memory of the TikTok loader on a generated raw file, per worker count.

    python benchmarks/data_prep.py [--rows 10000000[,30000000]] [--processes 1,2]
        [--cardinality_scale 1] [--workdir DIR] [--output FILE.json]

Writes a raw `final_track1_train.txt` of `--rows` rows in the ICME 2019 layout
(12 tab-separated columns, ids drawn with Zipf-like skew), then prepares it as
`python -m data_prep.tiktok --processes=N` does, in a child process per N, and
reports for each: rows/s over the child's whole run (Python and TensorFlow
start-up included) and over `prepare` alone, rows/s per worker, the child's
CPU seconds and peak resident memory (ru_maxrss; both from wait4; on a shared
machine the CPU seconds say what the wall time cannot), and where `prepare`'s time went
(`data_prep.writer.prepare`'s `timings`: waiting for the reader, validating,
placing, counting, encoding, writing; the parallel steps summed over workers),
as JSON and as lines of text, with the number of distinct ids the file holds.
Several `--rows` show whether memory grows with the input. With the file's
cardinalities, more rows also see more distinct ids (the Zipf tail), and the
value counts behind an exact vocabulary grow with those; `--cardinality_scale`
small enough that the first `--rows` see every id separates the two: rows are
added, the vocabulary is not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List

import numpy as np
import pandas as pd

from machine import describe, write_report  # benchmarks/machine.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARDINALITIES = {"uid": 70_000, "user_city": 400, "item_id": 4_000_000, "author_id": 850_000,
                 "item_city": 460, "channel": 5, "music_id": 90_000, "device_id": 70_000,
                 "video_duration": 60}
COLUMNS = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
           "music_id", "device_id", "create_time", "video_duration"]


def write_raw(path: str, rows: int, seed: int = 0, chunk: int = 1_000_000,
              cardinality_scale: float = 1.0) -> int:
  """Writes the raw file; returns how many distinct ids it holds (all id columns together)."""
  rng = np.random.default_rng(seed)
  cardinalities = {c: max(1, round(n * cardinality_scale)) for c, n in CARDINALITIES.items()}
  seen = {c: np.zeros(n, bool) for c, n in cardinalities.items()}
  with open(path, "w") as f:
    for start in range(0, rows, chunk):
      n = min(chunk, rows - start)
      frame = {}
      for column in COLUMNS:
        if column in cardinalities:
          frame[column] = (rng.zipf(1.3, n) - 1) % cardinalities[column]
          seen[column][frame[column]] = True
        elif column == "create_time":
          frame[column] = 53_000_000 + start + np.arange(n)
        else:
          frame[column] = (rng.random(n) < (0.3 if column == "finish" else 0.01)).astype(int)
      pd.DataFrame(frame, columns=COLUMNS).to_csv(f, sep="\t", header=False, index=False)
  return int(sum(mask.sum() for mask in seen.values()))


# The child: data_prep.tiktok's own preparation, with the writer's step timings kept.
CHILD = """
import functools, json, sys
from data_prep import tiktok, writer
raw, out, processes, report = sys.argv[1:]
timings = {}
writer.prepare = functools.partial(writer.prepare, timings=timings)  # as prepare_layout calls it
tiktok.prepare_tiktok(raw, out, processes=int(processes))
with open(report, "w") as f:
  json.dump(timings, f)
"""


def prepare(raw: str, out: str, processes: int, work: str) -> dict:
  """Prepares `raw` in a child process; its seconds, peak RSS and step timings."""
  report = os.path.join(work, "timings.json")
  with open(os.path.join(work, "child.log"), "w+") as log:
    start = time.time()
    child = subprocess.Popen([sys.executable, "-c", CHILD, raw, out, str(processes), report],
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.time() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
      log.seek(0)
      sys.exit(f"the loader failed:\n{log.read()[-3000:]}")
  with open(report) as f:
    timings = json.load(f)
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  shutil.rmtree(out)
  os.remove(report)
  os.remove(os.path.join(work, "child.log"))
  return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
          "peak_rss_mib": usage.ru_maxrss / 1024, "timings": timings,
          "split_rows": {s: v["rows"] for s, v in stats.items()}}


def _counts(text: str) -> List[int]:
  return [int(v) for v in text.split(",") if v]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=_counts, default=[10_000_000],
                      help="Rows of the raw file; several (comma-separated) to compare memory.")
  parser.add_argument("--processes", type=_counts, default=[1, 2],
                      help="Worker counts to prepare with (comma-separated).")
  parser.add_argument("--workdir", default=None, help="Where the raw file and output go "
                      "(default: a temporary directory, removed afterwards).")
  parser.add_argument("--cardinality_scale", type=float, default=1.0,
                      help="Scales every id column's cardinality (default 1: the ICME 2019 "
                      "file's). A small scale (0.005) makes 10M rows see every id, so that "
                      "a larger --rows adds rows but no vocabulary: memory per row, alone.")
  parser.add_argument("--output", default="benchmarks/results/data_prep.json")
  args = parser.parse_args()

  runs = []
  for rows in args.rows:
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
      raw = os.path.join(work, "final_track1_train.txt")
      start = time.time()
      distinct_ids = write_raw(raw, rows, cardinality_scale=args.cardinality_scale)
      generate_seconds = time.time() - start
      for processes in args.processes:
        done = prepare(raw, os.path.join(work, "prepared"), processes, work)
        prepare_seconds = done["timings"]["total"]
        run = {
            "rows": rows, "raw_bytes": os.path.getsize(raw), "processes": processes,
            "cardinality_scale": args.cardinality_scale, "distinct_ids": distinct_ids,
            "generate_seconds": round(generate_seconds, 1),
            "seconds": round(done["seconds"], 1),
            "cpu_seconds": round(done["cpu_seconds"], 1),
            "rows_per_second": round(rows / done["seconds"]),
            "rows_per_second_per_process": round(rows / done["seconds"] / processes),
            "prepare_seconds": round(prepare_seconds, 1),
            "prepare_rows_per_second": round(rows / prepare_seconds),
            "peak_rss_mib": round(done["peak_rss_mib"], 1),
            "step_seconds": {k: round(v, 2) for k, v in done["timings"].items()},
            "split_rows": done["split_rows"],
        }
        runs.append(run)
        steps = ", ".join(f"{k} {v:.1f}" for k, v in run["step_seconds"].items())
        print(f"{rows:,} rows, {processes} process(es): {run['seconds']} s "
              f"({run['cpu_seconds']} s CPU), "
              f"{run['rows_per_second']:,} rows/s ({run['prepare_rows_per_second']:,} in "
              f"prepare), {run['rows_per_second_per_process']:,} rows/s per process, peak RSS "
              f"{run['peak_rss_mib']:,} MiB ({distinct_ids:,} distinct ids); seconds per step: {steps}")
  best = max(runs, key=lambda r: (r["rows"] == args.rows[0], r["rows_per_second"]))
  report = {**{k: best[k] for k in ("rows", "raw_bytes", "processes", "seconds",
                                    "rows_per_second", "peak_rss_mib", "split_rows")},
            "runs": runs, "machine": describe()}
  write_report(args.output, report)
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
