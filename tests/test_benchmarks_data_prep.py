"""benchmarks/data_prep.py runs end to end on a small raw file and reports what it promises:
rows/s, per process, peak RSS and seconds per step, for 1 and 2 processes."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_data_prep_benchmark_reports_rows_per_second_and_peak_rss(tmp_path):
  output = tmp_path / "report.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "data_prep.py"),
                           "--rows=20000", f"--workdir={tmp_path}", f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report["rows"] == 20000 and sum(report["split_rows"].values()) == 20000
  assert report["split_rows"]["test"] == 2000 and report["split_rows"]["valid"] == 1800
  assert report["rows_per_second"] > 0 and report["peak_rss_mib"] > 0
  runs = report["runs"]
  assert [r["processes"] for r in runs] == [1, 2]  # the default worker counts
  for run in runs:
    assert run["split_rows"] == report["split_rows"]  # the same split with either
    assert run["rows_per_second_per_process"] * run["processes"] <= run["rows_per_second"] + 2
    assert run["prepare_seconds"] <= run["seconds"] and run["peak_rss_mib"] > 0
    assert run["cpu_seconds"] > 0
    assert {"read", "validate", "place", "count", "encode", "write", "finish",
            "total"} <= set(run["step_seconds"])
  assert os.listdir(tmp_path) == ["report.json"]  # the raw file and output are cleaned up
