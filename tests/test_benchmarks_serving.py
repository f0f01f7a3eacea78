"""benchmarks/serving.py runs on an export, and on the authors' configuration, and reports
latency for each batch size, through the C++ session and the Python signature."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_serving_benchmark_reports_latency_per_batch(trained_run, tmp_path):
  output = tmp_path / "serving.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "serving.py"),
                           f"--saved_model={trained_run.export_path}", "--seconds=0.2",
                           "--batches=1,64", "--rounds=2", f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  exports = report["exports"]
  model_name = os.path.basename(os.path.dirname(trained_run.export_path))
  assert [e["name"] for e in exports] == [model_name, "stem_authors", "stem_authors_bfloat16"]
  assert [e["dtype_policy"] for e in exports] == ["float32", "float32", "bfloat16"]
  assert exports[0]["saved_model"] == trained_run.export_path
  for export in exports:
    assert [r["batch"] for r in export["results"]] == [1, 64]
    for r in export["results"]:
      assert r["max_abs_difference"] < 1e-6  # both ways run the same graph on the same rows
      for way in ("session", "python"):
        timing = r[way]
        assert 0 < timing["p50_ms"] <= timing["p99_ms"] and timing["calls"] >= 20
        assert timing["examples_per_second"] > 0
  # the authors' STEM has a FLOP model, so a GEMM-only fraction; its forward pass is larger
  for authors in (exports[1]["results"], exports[2]["results"]):
    assert all(0 < r[way]["fraction_of_gemm_only"] for r in authors for way in ("session",
                                                                              "python"))
    assert all(len(r["gemm_only_readings"]) == 2 for r in authors)  # one after each round
    assert (authors[1]["session"]["examples_per_second"]
            < exports[0]["results"][1]["session"]["examples_per_second"])
  assert not any(os.path.exists(e["saved_model"]) for e in exports[1:])  # temporary, removed
  assert "C++ session (as TF Serving)" in result.stdout
