"""benchmarks/step_profile.py profiles real training steps and accounts for their op time."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_step_profile_reports_where_the_step_time_goes(tmp_path):
  output = tmp_path / "step_profile.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "step_profile.py"),
                           "--config=default", "--batch=256", "--steps=3", "--rows=3000",
                           f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert (report["model"], report["config"], report["batch"]) == ("stem", "default", 256)
  assert report["compute_threads"] >= 1 and report["machine"]["cpus"] >= 1
  ops, groups = report["ops_ms_per_step"], report["groups_ms_per_step"]
  # Every op type is in exactly one group, and the groups add up to the total.
  assert sum(groups.values()) == pytest.approx(report["thread_ms_per_step"], abs=0.5)
  assert sum(ops.values()) == pytest.approx(report["thread_ms_per_step"], abs=0.5)
  assert sum(report["groups_share"].values()) == pytest.approx(1.0, abs=0.01)
  # A training step runs the dense products forward and backward, and the optimizer.
  assert any("MatMul" in op for op in ops) and groups["matmul"] > 0
  assert groups["optimizer"] > 0 and report["matmul_gflops_per_busy_thread"] > 0
  # The executor's own events are not op types (they would count op time twice).
  assert not any("Process" in op or "::" in op for op in ops)
