"""benchmarks/train_throughput.py trains, times and compares against ceilings read in the run."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier


def test_train_throughput_reports_every_pipeline_and_policy(tmp_path):
  output = tmp_path / "train_throughput.json"
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "train_throughput.py"),
                           "--models=stem", "--configs=tiny_256", "--steps=2",
                           "--rows=12000", "--timing_seconds=0.02", "--peak_size=256",
                           f"--output={output}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  runs = report["runs"]
  assert [(r["pipeline"], r["policy"]) for r in runs] == [
      ("records", "float32"), ("in_memory", "float32"), ("excluded", "float32"),
      ("records", "mixed_bfloat16")]
  # the GEMM-only ceiling in the precision the step's products ran in
  assert [r["gemm_only_dtype"] for r in runs] == ["float32"] * 3 + ["bfloat16"]
  for r in runs:
    assert (r["model"], r["config"], r["batch"]) == ("stem", "tiny_256", 256)
    assert r["examples_per_second"] > 0 and r["gemm_only_examples_per_second"] > 0
    assert r["achieved_gflops"] == pytest.approx(
        r["train_mflop_per_example"] * r["examples_per_second"] / 1e3, rel=0.01)
    # the highest peak reading of the run divides at least as much as the one right after
    assert 0 < r["fraction_of_fp32_peak_max"] <= r["fraction_of_fp32_peak_after"] + 0.001
  # one fp32 peak reading at the start and one after each measurement
  assert len(report["fp32_peak_readings_gflops"]) == 1 + len(runs)
  assert report["fp32_peak_max_gflops"] == max(report["fp32_peak_readings_gflops"])
  assert {"fp32_square_256", "bf16_square_256"} <= set(report["ceiling_gflops"])
  # the input pipeline alone is timed after the fp32 runs that read it
  assert ["pipeline_over_step" in r for r in runs] == [True, True, False, False]


def test_train_throughput_rejects_an_unknown_configuration(tmp_path):
  result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "train_throughput.py"),
                           "--configs=authors_1024", f"--output={tmp_path / 'out.json'}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 2 and "unknown --configs ['authors_1024']" in result.stderr
  assert not (tmp_path / "out.json").exists()
