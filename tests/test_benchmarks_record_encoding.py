"""benchmarks/record_encoding.py runs on a few rows, checks both paths agree, reports rows/s."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_record_encoding_benchmark_reports_rows_per_second_of_both_paths(tmp_path):
  output = tmp_path / "report.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "record_encoding.py"),
                           "--rows=3000", "--rows_per_record=64", "--repeats=1",
                           f"--workdir={tmp_path}", f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report["rows"] == 3000 and report["records"] == 47  # 46 of 64 rows, then 56
  assert len(report["features"]) == 9 and report["labels"] == ["finish", "like"]
  for stage in ("encode", "shard"):
    assert report["rows_per_second"][stage]["messages"] > 0
    assert report["rows_per_second"][stage]["arrays"] > 0
    assert report["speedup"][stage] > 0
  assert report["shard_bytes"] > 3000 * 9
  assert "encode: " in result.stdout and "shard: " in result.stdout
  assert os.listdir(tmp_path) == ["report.json"]  # the shard files are cleaned up
