"""benchmarks/training_details.py runs each variant's benchmark and reports its change, paired by seed."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO, TINY_MODEL_FLAGS
from tests.test_report import rendered

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_training_details_reports_each_variant_against_ours(tiny_data, tmp_path):
  output = tmp_path / "results" / "training_details.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "training_details.py"),
       f"--data_dir={tiny_data}", "--variants=ours,no_embedding_l2", "--models=stem",
       "--seeds=2", f"--work={tmp_path / 'work'}", f"--output={output}",
       "--flags=--epochs=1 --bootstrap_replicates=10 " + " ".join(TINY_MODEL_FLAGS)],
      capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report["variants"] == ["ours", "no_embedding_l2"] and report["seeds"] == 2
  rows = {(r["variant"], r["task"]): r for r in report["rows"]}
  assert set(rows) == {(v, t) for v in ("ours", "no_embedding_l2") for t in ("finish", "like")}
  config = lambda v: json.load(open(tmp_path / "work" / v / "runs" / "stem" / "seed-2023" /
                                    "config.json"))
  assert config("ours")["model_config"]["embedding_l2"] == 1e-6  # the study's
  assert config("no_embedding_l2")["model_config"]["embedding_l2"] == 0.0  # its one change
  assert config("ours")["model_config"]["embedding_dim"] == 4  # --flags come last
  for task in ("finish", "like"):
    ours, other = rows[("ours", task)], rows[("no_embedding_l2", task)]
    assert "diff_mean" not in ours and ours["seeds"] == 2 and ours["auc_std"] >= 0
    assert other["diff_mean"] == pytest.approx(other["auc_mean"] - ours["auc_mean"])
    assert other["diff_low"] <= other["diff_mean"] <= other["diff_high"]

  text = rendered(output.parent, tmp_path)
  assert "python benchmarks/training_details.py --variants ours,no_embedding_l2" in text
  assert "| no_embedding_l2 | --embedding_l2=0 | stem | like |" in text


def test_an_unknown_variant_is_refused_before_anything_runs(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "training_details.py"),
       "--variants=ours,faster", f"--work={tmp_path / 'work'}",
       f"--output={tmp_path / 'out.json'}"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 2 and "unknown --variants ['faster']" in result.stderr
  assert not (tmp_path / "work").exists() and not (tmp_path / "out.json").exists()
