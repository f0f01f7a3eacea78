"""benchmarks/optimizer.py times the three optimizers on a table and writes what it promises."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_optimizer_benchmark_reports_every_optimizer(tmp_path):
  output = tmp_path / "optimizer.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "optimizer.py"),
                           "--rows=5000", "--ids=512", "--steps=2", f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert (report["rows"], report["width"], report["ids"]) == (5000, 48, 512)
  assert set(report["ms_per_update"]) == {"keras_adam", "fused_adam", "lazy_adam"}
  assert all(len(blocks) == 3 and min(blocks) > 0 for blocks in report["ms_per_update"].values())
  assert report["best_speedup"] > 0 and report["lazy_best_speedup_over_fused"] > 0
  assert report["machine"]["cpus"] >= 1
