"""benchmarks/task_divergence.py compares the models at each task_divergence and the page renders it."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO
from tests.test_report import rendered

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_task_divergence_benchmark_compares_every_model_at_every_value(tmp_path):
  output = tmp_path / "results" / "task_divergence.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "task_divergence.py"),
       "--divergences=0,1", "--rows=3000", "--models=stem,single_task", "--seeds=1",
       "--epochs=1", "--replicates=20", f"--work={tmp_path / 'work'}", f"--output={output}",
       "--model_flags=embedding_dim=4 num_shared_experts=1 expert_hidden_units=8 "
       "gate_hidden_units=4 tower_hidden_units=4"],
      capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert [p["task_divergence"] for p in report["points"]] == [0.0, 1.0]
  for point in report["points"]:
    assert {(r["model"], r["task"]) for r in point["results"]} == {
        (m, t) for m in ("stem", "single_task") for t in ("finish", "like")}
    assert all(0.0 < r["auc_mean"] < 1.0 and r["auc_std"] is None for r in point["results"])
    overall = [x for x in point["intervals"] if x["group"] == "all"]
    assert {(x["reference"], x["baseline"], x["task"]) for x in overall} == {
        ("stem", "single_task", t) for t in ("finish", "like")}
    assert all(x["boot_low"] <= x["diff_mean"] <= x["boot_high"] for x in overall)
  config = json.load(open(tmp_path / "work" / "bench-0" / "runs" / "stem" / "seed-2023" /
                          "config.json"))
  assert config["model_config"]["embedding_dim"] == 4  # --model_flags reached the model

  text = rendered(output.parent, tmp_path)
  assert "python benchmarks/task_divergence.py --divergences 0,1 --rows 3000" in text
  assert "| model | finish AUC, D=0 | finish AUC, D=1 | like AUC, D=0 | like AUC, D=1 |" in text
  assert "| 0 | all | stem - single_task | like |" in text


def test_a_divergence_outside_zero_to_one_writes_nothing(tmp_path):
  output = tmp_path / "task_divergence.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "task_divergence.py"),
       "--divergences=0,2", "--rows=1000", f"--work={tmp_path / 'work'}", f"--output={output}"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode != 0
  assert "task_divergence must be in [0, 1], got 2.0" in result.stderr.splitlines()[-1]
  assert not output.exists() and not (tmp_path / "work").exists()
