"""benchmarks/data_prep.py runs end to end on a small raw file and reports what it promises."""

import json
import os
import subprocess
import sys

from conftest import REPO


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
  assert os.listdir(tmp_path) == ["report.json"]  # the raw file and output are cleaned up
