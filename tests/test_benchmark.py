"""`python main.py benchmark`: every model, every file, every row; finished runs are reused."""

import json
import os

import pandas as pd
import pytest

from stem_tfrs.models import MODEL_NAMES

from conftest import TINY_MODEL_FLAGS
from test_main import main_py

FILES = ["results.csv", "results.json", "results.md", "auc.png", "comparable.csv",
         "comparable.png", "gates.csv", "gates.png"]
GATED = {"stem", "omoe", "mmoe", "ple", "me_mmoe", "me_ple"}


@pytest.fixture(scope="module")
def benchmark_dir(tiny_data, tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "out"
  result = main_py("benchmark", f"--data_dir={tiny_data}", "--models=all", "--seeds=1",
                   "--epochs=1", "--batch_size=512", "--verbose=0", f"--output_dir={out}",
                   *TINY_MODEL_FLAGS, cwd=out.parent)
  assert result.returncode == 0, result.stderr[-3000:]
  return out


def test_every_report_file_is_written(benchmark_dir):
  for name in FILES:
    assert os.path.getsize(benchmark_dir / name) > 0, name


def test_results_have_a_row_per_model_and_task(benchmark_dir):
  results = pd.read_csv(benchmark_dir / "results.csv")
  assert list(results.columns) == [
      "model", "task", "seeds", "auc_mean", "auc_std", "gauc_mean", "gauc_std",
      "logloss_mean", "logloss_std", "params", "train_seconds", "examples_per_second"]
  assert {(m, t) for m, t in zip(results.model, results.task)} == {
      (m, t) for m in MODEL_NAMES for t in ("finish", "like")}
  assert results[["auc_mean", "gauc_mean", "logloss_mean", "params"]].notna().all().all()
  assert (results.params > 0).all() and (results.examples_per_second > 0).all()
  stem_params = results[results.model == "stem"].params.iloc[0]
  assert stem_params > results[results.model == "mmoe"].params.iloc[0]  # T+1 tables
  as_json = json.load(open(benchmark_dir / "results.json"))
  assert len(as_json["results"]) == len(results) and len(as_json["runs"]) == len(MODEL_NAMES)
  table = (benchmark_dir / "results.md").read_text()
  assert all(f"| {m} | finish |" in table for m in MODEL_NAMES)


def test_comparable_report_covers_groups_tasks_models(benchmark_dir):
  comparable = pd.read_csv(benchmark_dir / "comparable.csv")
  assert list(comparable.columns) == ["kappa", "task_a", "task_b", "group", "task", "model",
                                      "samples", "auc_mean", "auc_std", "auc_vs_single_task"]
  assert len(comparable) == 3 * 2 * len(MODEL_NAMES)
  assert set(comparable.group) == {"comparable", "A-dominant", "B-dominant"}
  single = comparable[comparable.model == "single_task"]
  assert (single.auc_vs_single_task == 0).all()


def test_gate_report_covers_gated_models(benchmark_dir):
  gates = pd.read_csv(benchmark_dir / "gates.csv")
  assert list(gates.columns) == ["model", "task", "own", "other_tasks", "shared"]
  assert {(m, t) for m, t in zip(gates.model, gates.task)} == {
      (m, t) for m in GATED for t in ("finish", "like")}


def test_rerun_reuses_finished_runs_and_retrains_only_the_missing_one(benchmark_dir, tiny_data):
  runs = benchmark_dir / "runs"
  summary = lambda m: runs / m / "seed-2023" / "summary.json"
  stamps = {m: os.path.getmtime(summary(m)) for m in MODEL_NAMES}
  os.remove(summary("mmoe"))  # as if the benchmark had crashed while training mmoe
  result = main_py("benchmark", f"--data_dir={tiny_data}", "--models=all", "--seeds=1", "--epochs=1", "--batch_size=512",
                   "--verbose=0", f"--output_dir={benchmark_dir}", *TINY_MODEL_FLAGS,
                   cwd=benchmark_dir.parent)
  assert result.returncode == 0, result.stderr[-3000:]
  for m in MODEL_NAMES:
    changed = os.path.getmtime(summary(m)) != stamps.get(m)
    assert changed == (m == "mmoe"), m
