"""`python main.py tune`: a KerasTuner search of whole runs, its table, best flagfile and resume."""

import csv
import json
import os
import shutil

import pytest
import tensorflow as tf

from stem_tfrs import TrainConfig
from stem_tfrs.training import trainer, tuning
from stem_tfrs.config import ConfigError

from tests.cli_cases import run_here
from tests.support import REPO, TINY_MODEL_FLAGS, tiny_model_config


def main_py(*args):
  """`python main.py ARGS`, run in this process (tests/cli_cases.py)."""
  return run_here(*args, cwd=REPO)


@pytest.mark.slow
def test_tune_writes_results_and_a_best_flagfile_that_train_accepts_and_resumes(
    tiny_data, tmp_path):
  out = tmp_path / "tuning"
  tune = ["tune", f"--data_dir={tiny_data}", f"--output_dir={out}", "--epochs=1",
          "--batch_size=512", "--eval_batch_size=4096", "--optimizer=lazy_adam", *TINY_MODEL_FLAGS]
  result = main_py(*tune, "--max_trials=2")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = list(csv.DictReader(open(out / "results.csv")))
  assert len(rows) == 2 and len({r["trial"] for r in rows}) == 2
  assert {"model.num_shared_experts", "model.embedding_l2", "model.net_dropout",
          "train.learning_rate", "train.seed", "val_auc", "val_gauc"} <= set(rows[0])
  assert all(0.5 < float(r["val_auc"]) < 1 for r in rows)
  best = max(rows, key=lambda r: float(r["val_auc"]))
  best_flags = (out / "best.flags").read_text()
  assert f"--num_shared_experts={best['model.num_shared_experts']}" in best_flags
  assert f"--seed={best['train.seed']}" in best_flags
  assert f"--data_dir={tiny_data}" in best_flags and "--epochs=1" in best_flags
  assert "--optimizer=lazy_adam" in best_flags.splitlines()

  train = main_py("train", f"--flagfile={out / 'best.flags'}", f"--run_dir={tmp_path / 'run'}",
                  "--export_dir=", "--verbose=0")
  assert train.returncode == 0, train.stderr[-3000:]
  assert (tmp_path / "run" / "metrics.json").exists()
  run_config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert run_config["train_config"]["optimizer"] == "lazy_adam"

  # Resume: the same search asked for 3 trials trains only the third.
  finished = {r["trial"]: r["val_auc"] for r in rows}
  again = main_py(*tune, "--max_trials=3")
  assert again.returncode == 0, again.stderr[-3000:]
  rows = list(csv.DictReader(open(out / "results.csv")))
  assert len(rows) == 3
  assert {r["trial"]: r["val_auc"] for r in rows if r["trial"] in finished} == finished
  assert sorted(os.listdir(out / "trials")) == sorted(r["trial"] for r in rows)

  # Another base cannot resume it: its finished trials would score another search.
  other = main_py(*tune, "--max_trials=4", "--model=mmoe", "--epochs=2")
  assert other.returncode == 1
  assert other.stderr.strip().splitlines()[-1] == (
      f"error: {out} holds a search with another base (train_config.epochs, "
      "train_config.model): rerun it with its own flags to resume, or use another --output_dir")
  assert len(list(csv.DictReader(open(out / "results.csv")))) == 3


def test_a_gauc_search_needs_a_group_column(tiny_data, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = json.loads((data / "schema.json").read_text())
  (data / "schema.json").write_text(json.dumps(dict(schema, group_column=None)))
  with pytest.raises(ConfigError, match=r"--objective=gauc needs a group column"):
    tuning.tune(tiny_model_config(), TrainConfig(data_dir=str(data)), str(tmp_path / "out"),
                objective="gauc")
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_diverged_trials_fail_one_line_each_and_stop_the_search_after_three(tiny_data, tmp_path):
  from tests.test_main import assert_clean_error
  out = tmp_path / "tuning"
  result = main_py("tune", f"--data_dir={tiny_data}", f"--output_dir={out}", "--epochs=1",
                   "--batch_size=512", "--eval_batch_size=4096", "--max_trials=5",
                   "--loss_weights=3e38,3e38", *TINY_MODEL_FLAGS)  # a total loss of inf
  assert_clean_error(result, rf"the search in {out} stopped: 3 trials in a row failed; the "
                             r"last, trial 2: training diverged: \w+ became (nan|inf) at epoch 1")
  warnings = [line for line in result.stderr.splitlines() if "training diverged" in line]
  assert len(warnings) == 4  # one per trial, then the error
  assert sorted(os.listdir(out / "trials")) == ["0", "1", "2"]
  assert not list(out.glob("trials/*/metrics.json"))
  # The stop is saved: a rerun trains nothing and stops again with the same error.
  again = main_py("tune", f"--data_dir={tiny_data}", f"--output_dir={out}", "--epochs=1",
                  "--batch_size=512", "--eval_batch_size=4096", "--max_trials=5",
                  "--loss_weights=3e38,3e38", *TINY_MODEL_FLAGS)
  assert again.stderr.strip().splitlines()[-1] == result.stderr.strip().splitlines()[-1]
  assert "training stem" not in again.stderr
  assert sorted(os.listdir(out / "trials")) == ["0", "1", "2"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # KerasTuner's threading calls
def test_any_failed_trial_is_named_and_a_stopped_search_says_why_again(tiny_data, tmp_path,
                                                                      monkeypatch):
  def out_of_memory(model_config, config, verbose=1):
    raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating [99]\ndetails")

  monkeypatch.setattr(trainer, "train", out_of_memory)
  config = TrainConfig(data_dir=tiny_data, epochs=1)
  message = (rf"the search in {tmp_path} stopped: 3 trials in a row failed; the last, trial 2: "
             r"ResourceExhaustedError: OOM when allocating \[99\]$")
  with pytest.raises(tuning.SearchFailed, match=message):
    tuning.tune(tiny_model_config(), config, str(tmp_path), max_trials=5)

  def no_training(*args, **kwargs):
    raise AssertionError("a stopped search trained again")

  monkeypatch.setattr(trainer, "train", no_training)  # resumed: the saved trials say why
  with pytest.raises(tuning.SearchFailed, match=message):
    tuning.tune(tiny_model_config(), config, str(tmp_path), max_trials=5)


def test_a_trial_whose_run_finished_before_the_search_recorded_it_is_scored_from_it(
    trained_run, tiny_data, tmp_path):
  # Killed after the trial's run wrote metrics.json, before KerasTuner saved the trial: the
  # resumed search runs the trial again, with the same values, into the same run directory.
  import dataclasses
  import keras_tuner
  oracle = keras_tuner.oracles.RandomSearchOracle(
      objective=keras_tuner.Objective("val_auc", direction="max"), max_trials=1, seed=1)
  base = TrainConfig(data_dir=tiny_data, epochs=1, batch_size=512)
  search = tuning.RunTuner(oracle, tiny_model_config(), base, trials_dir=str(tmp_path / "trials"),
                           directory=str(tmp_path), project_name="search")
  trial = keras_tuner.engine.trial.Trial(keras_tuner.HyperParameters(), trial_id="0")
  values = {f"{c}.{f}": candidates[0] for (c, f), candidates in tuning.SEARCH_SPACE.items()}
  model_config, _ = tuning.configs_for(values, tiny_model_config(), base)
  run_dir = tmp_path / "trials" / "0"
  shutil.copytree(trained_run.run_dir, run_dir)
  config = json.loads((run_dir / "config.json").read_text())
  config["model_config"] = json.loads(json.dumps(dataclasses.asdict(model_config)))
  (run_dir / "config.json").write_text(json.dumps(config))
  metrics = (run_dir / "metrics.json").read_text()
  scores = search.run_trial(trial)
  valid = json.loads(metrics)["valid"]
  assert scores == {f"val_{m}": sum(t[m] for t in valid.values()) / len(valid)
                    for m in tuning.OBJECTIVES}
  assert (run_dir / "metrics.json").read_text() == metrics  # not trained again
