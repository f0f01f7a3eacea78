"""benchmarks/export_precision.py scores a run's float32 and bfloat16 exports through their
signatures."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_export_precision_benchmark_scores_each_export_like_the_run(trained_run, tmp_path):
  output = tmp_path / "export_precision.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "export_precision.py"),
                           f"--run_dir={trained_run.run_dir}", f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert list(report["precisions"]) == ["float32", "bfloat16"]
  # The float32 SavedModel, scored through its signature, gives the run's own metrics.
  for split in ("valid", "test"):
    for task in ("finish", "like"):
      served = report["precisions"]["float32"][split][task]
      for key in ("logloss", "auc", "gauc"):
        assert served[key] == pytest.approx(trained_run.metrics[split][task][key], abs=1e-4)
      bf16 = report["precisions"]["bfloat16"][split][task]
      assert bf16["examples"] == served["examples"]
      assert bf16["auc_change"] == pytest.approx(bf16["auc"] - served["auc"])
      assert 0 < bf16["mean_probability_change"] <= bf16["max_probability_change"] < 0.05
  assert "bfloat16" in result.stdout and "float32" in result.stdout
