"""benchmarks/serving.py runs on an export and reports latency for each batch size."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_serving_benchmark_reports_latency_per_batch(trained_run, tmp_path):
  output = tmp_path / "serving.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "serving.py"),
                           f"--saved_model={trained_run.export_path}", "--seconds=0.2",
                           "--batches=1,64", f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert [r["batch"] for r in report["results"]] == [1, 64]
  for r in report["results"]:
    assert 0 < r["p50_ms"] <= r["p99_ms"] and r["calls"] >= 20 and r["examples_per_second"] > 0
