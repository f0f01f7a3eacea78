"""benchmarks/input_pipeline.py times the records pipeline on one core and on all cores."""

import json
import os
import statistics
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_input_pipeline_benchmark_reports_examples_per_second_per_core(tmp_path):
  output = tmp_path / "report.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"),
                           "--rows=3000", "--shards=2", "--batch=256", "--seconds=0.2",
                           "--repeats=2", "--compare_with=HEAD", f"--workdir={tmp_path}",
                           f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert (report["rows"], report["batch"], report["rows_per_record"]) == (3000, 256, 64)
  assert len(report["features"]) == 9 and report["tasks"] == ["finish", "like"]
  assert len(report["compare_with"]) == 40  # the revision, resolved
  assert [run["cores"] for run in report["runs"]] == [1, len(os.sched_getaffinity(0))]
  for run in report["runs"]:
    assert set(run["pipelines"]) == {"current", "HEAD"}
    for figures in run["pipelines"].values():
      assert len(figures["examples_per_second"]) == 2 and min(figures["examples_per_second"]) > 0
      assert figures["median_examples_per_second"] == round(
          statistics.median(figures["examples_per_second"]))
      assert figures["median_examples_per_second_per_core"] == round(
          figures["median_examples_per_second"] / run["cores"])
  assert os.listdir(tmp_path) == ["report.json"]  # the data set is cleaned up


def test_input_pipeline_benchmark_rejects_more_cores_than_it_may_use(tmp_path):
  cores = len(os.sched_getaffinity(0)) + 1
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"),
                           f"--cores={cores}", f"--output={tmp_path / 'out.json'}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 2 and f"--cores ['{cores}']" in result.stderr
  assert not (tmp_path / "out.json").exists()
