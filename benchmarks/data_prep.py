"""Throughput and peak memory of the TikTok loader on a generated raw file.

    python benchmarks/data_prep.py [--rows 10000000] [--workdir DIR] [--output FILE.json]

Writes a raw `final_track1_train.txt` of `--rows` rows in the ICME 2019 layout
(12 tab-separated columns, ids drawn with Zipf-like skew), then runs
`python -m data_prep.tiktok` on it in a child process and reports rows/s and
the child's peak resident memory (ru_maxrss), as JSON and as a line of text.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from machine import describe  # benchmarks/machine.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARDINALITIES = {"uid": 70_000, "user_city": 400, "item_id": 4_000_000, "author_id": 850_000,
                 "item_city": 460, "channel": 5, "music_id": 90_000, "device_id": 70_000,
                 "video_duration": 60}
COLUMNS = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
           "music_id", "device_id", "create_time", "video_duration"]


def write_raw(path: str, rows: int, seed: int = 0, chunk: int = 1_000_000) -> None:
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for start in range(0, rows, chunk):
      n = min(chunk, rows - start)
      frame = {}
      for column in COLUMNS:
        if column in CARDINALITIES:
          frame[column] = (rng.zipf(1.3, n) - 1) % CARDINALITIES[column]
        elif column == "create_time":
          frame[column] = 53_000_000 + start + np.arange(n)
        else:
          frame[column] = (rng.random(n) < (0.3 if column == "finish" else 0.01)).astype(int)
      pd.DataFrame(frame, columns=COLUMNS).to_csv(f, sep="\t", header=False, index=False)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=10_000_000)
  parser.add_argument("--workdir", default=None, help="Where the raw file and output go "
                      "(default: a temporary directory, removed afterwards).")
  parser.add_argument("--output", default="benchmarks/results/data_prep.json")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory(dir=args.workdir) as work:
    raw = os.path.join(work, "final_track1_train.txt")
    start = time.time()
    write_raw(raw, args.rows)
    generate_seconds = time.time() - start
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.tiktok", f"--raw={raw}", f"--out={work}/prepared"],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    seconds = time.time() - start
    if result.returncode != 0:
      sys.exit(f"the loader failed:\n{result.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    stats = json.load(open(os.path.join(work, "prepared", "stats.json")))
    report = {
        "rows": args.rows, "raw_bytes": os.path.getsize(raw),
        "generate_seconds": round(generate_seconds, 1),
        "prepare_seconds": round(seconds, 1),
        "rows_per_second": round(args.rows / seconds),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "split_rows": {s: v["rows"] for s, v in stats.items()},
        "machine": describe(),
    }
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(report, f, indent=2)
  print(f"{args.rows:,} rows in {seconds:.1f} s: {report['rows_per_second']:,} rows/s, "
        f"peak RSS {report['peak_rss_mib']:,} MiB -> {args.output}")


if __name__ == "__main__":
  main()
