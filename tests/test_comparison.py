"""`python main.py benchmark`: every model, every file, every row; finished runs are reused."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from stem_tfrs.models import MODEL_NAMES

from tests.support import TINY_MODEL_FLAGS
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error

FILES = ["results.csv", "results.json", "results.md", "intervals.csv", "auc.png",
         "comparable.csv", "comparable.png", "gates.csv", "gates.png"]
GATED = {"stem", "omoe", "mmoe", "ple", "me_mmoe", "me_ple"}


#: Each model's flagfile in the shared benchmark: two with settings of their own.
PER_MODEL = {"stem": ["--model=stem", "--learning_rate=0.003", "--epochs=4", "--nobatch_norm"],
             "mmoe": ["--model=mmoe", "--learning_rate=0.0003", "--epochs=4",
                      "--net_dropout=0.1"]}


def _flagfiles(directory, **per_model):
  directory.mkdir()
  for model, lines in per_model.items():
    (directory / f"{model}.flags").write_text("# a comment\n" + "\n".join(lines) + "\n")
  return directory


def _benchmark(data, out, cwd, *extra):
  """`main.py benchmark` of every model, one seed, each with its flagfile under out's parent."""
  return run_here("benchmark", f"--data_dir={data}", "--models=all", "--seeds=1", "--epochs=1",
                  "--batch_size=512", "--verbose=0", f"--output_dir={out}",
                  f"--model_flags_dir={out.parent / 'flags'}", *extra, *TINY_MODEL_FLAGS,
                  cwd=cwd)


@pytest.fixture(scope="module")
def benchmark_dir(tiny_data, tmp_path_factory):
  """Every model trained once, each with its own flagfile (stem's and mmoe's set their own
  learning rate, epochs and dropout) under the command line's flags."""
  out = tmp_path_factory.mktemp("bench") / "out"
  _flagfiles(out.parent / "flags", **{m: PER_MODEL.get(m, [f"--model={m}"])
                                      for m in MODEL_NAMES})
  result = _benchmark(tiny_data, out, out.parent, "--bootstrap_replicates=100")
  assert result.returncode == 0, result.stderr[-3000:]
  return out


@pytest.mark.slow
def test_every_report_file_is_written(benchmark_dir):
  for name in FILES:
    assert os.path.getsize(benchmark_dir / name) > 0, name


@pytest.mark.slow
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
  assert all(r["auc_std"] is None for r in as_json["results"])  # one seed: null, not NaN
  table = (benchmark_dir / "results.md").read_text()
  assert all(f"| {m} | finish | 1 |" in table for m in MODEL_NAMES)


@pytest.mark.slow
def test_comparable_report_covers_groups_tasks_models(benchmark_dir):
  comparable = pd.read_csv(benchmark_dir / "comparable.csv")
  assert list(comparable.columns) == ["kappa", "task_a", "task_b", "group", "task", "model",
                                      "samples", "auc_mean", "auc_std", "auc_vs_single_task",
                                      "gap_seed_low", "gap_seed_high", "gap_boot_low",
                                      "gap_boot_high", "gap_verdict"]
  assert len(comparable) == 3 * 2 * len(MODEL_NAMES)
  assert set(comparable.group) == {"comparable", "A-dominant", "B-dominant"}
  single = comparable[comparable.model == "single_task"]
  assert (single.auc_vs_single_task == 0).all() and single.gap_verdict.isna().all()
  others = comparable[comparable.model != "single_task"]
  # One seed: no seed interval; the bootstrap interval holds the gap.
  assert others.gap_seed_low.isna().all()
  assert (others.gap_boot_low <= others.auc_vs_single_task + 1e-9).all()
  assert (others.auc_vs_single_task <= others.gap_boot_high + 1e-9).all()
  assert others.gap_verdict.str.match(r"^(within noise|\w+ better)$").all()


@pytest.mark.slow
def test_intervals_compare_stem_with_every_other_model(benchmark_dir):
  table = pd.read_csv(benchmark_dir / "intervals.csv")
  every_row = table[table.group == "all"]
  assert set(every_row.reference) == {"stem"}
  assert {(b, t) for b, t in zip(every_row.baseline, every_row.task)} == {
      (m, t) for m in MODEL_NAMES if m != "stem" for t in ("finish", "like")}
  assert set(table.group) == {"all", "comparable", "A-dominant", "B-dominant"}
  auc = every_row[every_row.metric == "auc"]
  results = pd.read_csv(benchmark_dir / "results.csv").set_index(["model", "task"])
  for r in auc.itertuples():  # the difference of the reported test AUCs
    assert r.diff_mean == pytest.approx(results.loc[("stem", r.task), "auc_mean"]
                                        - results.loc[(r.baseline, r.task), "auc_mean"])
    assert r.boot_low < r.boot_high
  as_json = json.load(open(benchmark_dir / "results.json"))
  assert len(as_json["intervals"]) == len(table)
  assert as_json["benchmark"]["reference"] == "stem"
  assert "| stem - mmoe | like | auc | 1 |" in (benchmark_dir / "results.md").read_text()


@pytest.mark.slow
def test_gate_report_covers_gated_models(benchmark_dir):
  gates = pd.read_csv(benchmark_dir / "gates.csv")
  assert list(gates.columns) == ["model", "task", "own", "other_tasks", "shared"]
  assert {(m, t) for m, t in zip(gates.model, gates.task)} == {
      (m, t) for m in GATED for t in ("finish", "like")}


@pytest.mark.slow
def test_rerun_reuses_finished_runs_and_retrains_only_the_missing_one(benchmark_dir, tiny_data):
  runs = benchmark_dir / "runs"
  summary = lambda m: runs / m / "seed-2023" / "summary.json"
  stamps = {m: os.path.getmtime(summary(m)) for m in MODEL_NAMES}
  os.remove(summary("mmoe"))  # as if the benchmark had crashed while training mmoe
  result = _benchmark(tiny_data, benchmark_dir, benchmark_dir.parent)
  assert result.returncode == 0, result.stderr[-3000:]
  for m in MODEL_NAMES:
    changed = os.path.getmtime(summary(m)) != stamps.get(m)
    assert changed == (m == "mmoe"), m


@pytest.mark.slow
def test_a_moved_output_directory_keeps_its_finished_runs(benchmark_dir, tiny_data, tmp_path):
  moved = tmp_path / "moved"
  shutil.copytree(benchmark_dir, moved)  # keeps the files' times
  shutil.copytree(benchmark_dir.parent / "flags", tmp_path / "flags")
  summaries = sorted(moved.glob("runs/*/seed-2023/summary.json"))
  stamps = [os.path.getmtime(p) for p in summaries]
  result = _benchmark(tiny_data, moved, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(summaries) == len(MODEL_NAMES)
  assert [os.path.getmtime(p) for p in summaries] == stamps  # nothing trained again


def test_every_models_flags_are_checked_before_the_first_trains(tiny_data, tmp_path):
  result = run_here("benchmark", f"--data_dir={tiny_data}", "--models=stem,single_task,mmoe",
                    "--num_shared_experts=0", "--epochs=1", f"--output_dir={tmp_path / 'out'}",
                    *[f for f in TINY_MODEL_FLAGS if "num_shared_experts" not in f], cwd=tmp_path)
  assert_clean_error(result, r"MMoE mixes shared experts only: num_shared_experts must be >= 1")
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_one_task_data_is_benchmarked_without_the_comparable_analysis(tiny_data, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = json.loads((data / "schema.json").read_text())
  (data / "schema.json").write_text(json.dumps(dict(schema, labels=["like"])))
  result = run_here("benchmark", f"--data_dir={data}", "--models=stem,single_task", "--epochs=1",
                    "--batch_size=512", "--verbose=0", f"--output_dir={tmp_path / 'out'}",
                    "--bootstrap_replicates=100", *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  written = set(os.listdir(tmp_path / "out"))
  assert {"results.csv", "auc.png"} <= written and "comparable.csv" not in written
  assert set(pd.read_csv(tmp_path / "out" / "results.csv")["task"]) == {"like"}


def _bench(tmp_path, models, epochs=1):
  from stem_tfrs import TrainConfig
  from stem_tfrs.training import comparison
  from tests.support import tiny_model_config
  return (tiny_model_config(),
          TrainConfig(batch_size=512, epochs=epochs, early_stop_patience=5, seed=11),
          comparison.BenchmarkConfig(models=tuple(models), output_dir=str(tmp_path / "out"),
                                     replicates=100))


def _epochs_begun(begun, stop_at=None):
  """A Keras callback that appends each epoch a fit begins to `begun`, and can stop one."""
  import tensorflow as tf

  class EpochsBegun(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      begun.append(epoch)
      if epoch == stop_at:  # stands in for a preempted machine
        raise KeyboardInterrupt(f"interrupted at epoch {epoch}")

  return EpochsBegun()


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_finished_epoch(tiny_data, tmp_path,
                                                                 monkeypatch):
  import dataclasses
  from stem_tfrs.training import callbacks, comparison
  model_config, train_config, bench = _bench(tmp_path, ["stem"], epochs=2)
  train_config = dataclasses.replace(train_config, data_dir=tiny_data)
  for_run = callbacks.for_run
  first, second = [], []
  monkeypatch.setattr(callbacks, "for_run", lambda *a: for_run(*a) + [_epochs_begun(first, 1)])
  with pytest.raises(KeyboardInterrupt):
    comparison.run_benchmark(model_config, train_config, bench)
  run_dir = tmp_path / "out" / "runs" / "stem" / "seed-11"
  assert json.load(open(run_dir / "backup" / "callbacks.json"))["epoch"] == 0

  monkeypatch.setattr(callbacks, "for_run", lambda *a: for_run(*a) + [_epochs_begun(second)])
  report = comparison.run_benchmark(model_config, train_config, bench)
  assert first == [0, 1] and second == [1]   # epoch 0 was not trained again
  assert json.load(open(run_dir / "training.json"))["epochs_run"] == 2
  assert list(report.results["model"]) == ["stem", "stem"] and not report.failed


@pytest.mark.slow
def test_a_diverged_run_is_reported_kept_and_not_trained_again(tiny_data, tmp_path,
                                                               monkeypatch):
  import dataclasses
  from stem_tfrs.training import trainer
  from stem_tfrs.training import comparison
  model_config, train_config, bench = _bench(tmp_path, ["single_task", "mmoe"])
  train_config = dataclasses.replace(train_config, data_dir=tiny_data)
  out = tmp_path / "out"
  out.mkdir()
  (out / "gates.png").write_bytes(b"an earlier benchmark's")
  train = trainer.train

  def mmoe_diverges(model_config, config, verbose=1):
    if config.model == "mmoe":
      raise trainer.TrainingDiverged("training diverged: loss became nan at epoch 1, batch 3")
    return train(model_config, config, verbose=verbose)

  monkeypatch.setattr(trainer, "train", mmoe_diverges)
  report = comparison.run_benchmark(model_config, train_config, bench)
  assert [(f["model"], f["seed"]) for f in report.failed] == [("mmoe", 11)]
  assert set(report.results["model"]) == {"single_task"}
  failure = json.load(open(out / "runs" / "mmoe" / "seed-11" / "failed.json"))
  assert failure["failed"] == "training diverged: loss became nan at epoch 1, batch 3"
  assert "- mmoe, seed 11: training diverged: loss became nan" in (out / "results.md").read_text()
  assert json.load(open(out / "results.json"))["failed"][0]["model"] == "mmoe"
  # Only single_task finished, and it has no gates: no gates.png, and the stale one is gone.
  assert "gates.png" not in report.files and not (out / "gates.png").exists()
  assert report.files == [f for f in FILES if f != "gates.png"]

  def no_training(*args, **kwargs):
    raise AssertionError("a recorded run was trained again")

  monkeypatch.setattr(trainer, "train", no_training)
  again = comparison.run_benchmark(model_config, train_config, bench)
  assert again.failed == report.failed
  pd.testing.assert_frame_equal(again.results, report.results)


@pytest.mark.slow
def test_a_benchmark_whose_every_run_diverges_is_a_one_line_error(tiny_data, tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "results.csv").write_text("an earlier benchmark's results\n")
  result = run_here("benchmark", f"--data_dir={tiny_data}", "--models=stem,single_task",
                    "--seeds=1", "--epochs=1", "--batch_size=512", "--verbose=0",
                    "--loss_weights=3e38,3e38", f"--output_dir={tmp_path / 'out'}",
                    *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert_clean_error(result, r"every run of the benchmark diverged \(the first: stem, training "
                             r"diverged: \w+ became (nan|inf)")
  for model in ("stem", "single_task"):
    assert (tmp_path / "out" / "runs" / model / "seed-2023" / "failed.json").exists()
  assert not (tmp_path / "out" / "results.csv").exists()  # no stale report passes for this one


def test_a_run_recorded_before_a_setting_existed_counts_with_what_it_ran_with(tmp_path):
  from stem_tfrs.training import comparison
  expected = {"model_config": {"embedding_dim": 4, "initialization": "keras"},
              "train_config": {"seed": 1, "gradient_clip_norm": 10.0}, "data": {"rows": 3}}
  old = {"model_config": {"embedding_dim": 4}, "train_config": {"seed": 1}, "data": {"rows": 3}}
  (tmp_path / "summary.json").write_text(json.dumps({"config": old, "metrics": {}}))
  # It did not clip: not the run of today's default, which clips at 10.
  assert comparison._recorded(str(tmp_path), "summary.json", expected) is None
  old["train_config"]["gradient_clip_norm"] = 10.0
  (tmp_path / "summary.json").write_text(json.dumps({"config": old, "metrics": {}}))
  assert comparison._recorded(str(tmp_path), "summary.json", expected)["config"] == old
  fuxictr = dict(expected, model_config={"embedding_dim": 4, "initialization": "fuxictr"})
  assert comparison._recorded(str(tmp_path), "summary.json", fuxictr) is None


def test_results_report_the_sample_std_over_seeds():
  from stem_tfrs.training import comparison
  runs = [{"model": "stem", "params": 10, "train_seconds": 1.0, "examples_per_second": 5.0,
           "metrics": {"test": {"like": {"auc": auc, "gauc": 0.6, "logloss": 0.5}}}}
          for auc in (0.70, 0.72, 0.77)]
  row = comparison.aggregate(runs, ["like"]).iloc[0]
  assert row.auc_mean == pytest.approx(0.73)
  assert row.auc_std == pytest.approx(0.036055, abs=1e-6)  # n - 1; population std: 0.029439
  assert row.gauc_std == 0.0
  one = comparison.aggregate(runs[:1], ["like"]).iloc[0]
  assert np.isnan(one.auc_std) and one.seeds == 1  # undefined for one value
  table = comparison.markdown(pd.concat([comparison.aggregate(runs, ["like"]),
                                        comparison.aggregate(runs[:1], ["like"])]))
  assert "| stem | like | 3 | 0.7300 ± 0.0361 |" in table
  assert "| stem | like | 1 | 0.7000 | 0.6000 | 0.5000 |" in table


@pytest.mark.slow
def test_a_run_stopped_after_training_is_summarized_from_its_checkpoint(tiny_data, tmp_path,
                                                                        monkeypatch):
  import dataclasses
  from stem_tfrs.training import trainer
  from stem_tfrs.training import comparison
  model_config, train_config, bench = _bench(tmp_path, ["stem"])
  train_config = dataclasses.replace(train_config, data_dir=tiny_data)
  first = comparison.run_benchmark(model_config, train_config, bench)
  run_dir = tmp_path / "out" / "runs" / "stem" / "seed-11"
  predictions = dict(np.load(run_dir / "predictions.npz"))
  gates = json.load(open(run_dir / "summary.json"))["gates"]
  for name in ("summary.json", "predictions.npz"):  # as if killed while predicting
    os.remove(run_dir / name)

  def no_training(*args, **kwargs):
    raise AssertionError("a trained run was trained again")

  monkeypatch.setattr(trainer, "train", no_training)
  again = comparison.run_benchmark(model_config, train_config, bench)
  pd.testing.assert_frame_equal(again.results, first.results)
  with np.load(run_dir / "predictions.npz") as again_predictions:
    for key, value in predictions.items():
      if value.dtype.kind == "f":  # the same weights: the same scores
        np.testing.assert_allclose(again_predictions[key], value, rtol=1e-5)
      else:
        np.testing.assert_array_equal(again_predictions[key], value)
  again_gates = json.load(open(run_dir / "summary.json"))["gates"]
  for task, shares in gates.items():
    assert again_gates[task] == pytest.approx(shares)


@pytest.mark.slow
def test_each_model_runs_with_its_own_flagfile_under_the_command_line(benchmark_dir):
  config = lambda m: json.load(open(benchmark_dir / "runs" / m / "seed-2023" / "config.json"))
  stem, mmoe, ple = config("stem"), config("mmoe"), config("ple")
  assert stem["train_config"]["learning_rate"] == 0.003
  assert mmoe["train_config"]["learning_rate"] == 0.0003
  assert ple["train_config"]["learning_rate"] == 1e-3  # no rate in its file: the default
  assert stem["model_config"]["net_dropout"] == 0.0 and mmoe["model_config"]["net_dropout"] == 0.1
  for run in (stem, mmoe):  # the command line wins over every flagfile
    assert run["train_config"]["epochs"] == 1 and run["model_config"]["embedding_dim"] == 4
  settings = json.load(open(benchmark_dir / "results.json"))["settings"]
  assert settings["stem"]["learning_rate"] == 0.003 and settings["mmoe"]["learning_rate"] == 0.0003
  table = (benchmark_dir / "results.md").read_text()
  assert "| mmoe | 0.1 | 0.0003 |" in table and "embedding_dim=4" in table


def test_all_means_every_model_or_with_flagfiles_the_models_with_one(tmp_path):
  from stem_tfrs.cli import benchmark as benchmark_cli
  from stem_tfrs.config import ConfigError
  flags_dir = _flagfiles(tmp_path / "flags", stem=["--model=stem"], mmoe=["--model=mmoe"])
  assert benchmark_cli._models(["all"], str(flags_dir)) == ("stem", "mmoe")
  assert benchmark_cli._models(["all"], None) == MODEL_NAMES
  assert benchmark_cli._models(["ple", "stem"], str(flags_dir)) == ("ple", "stem")
  with pytest.raises(ConfigError, match=r"holds no <model>\.flags file"):
    benchmark_cli._models(["all"], str(tmp_path))


@pytest.mark.parametrize("lines, message", [
    (["--model=stem", "--output_dir=elsewhere"],
     r"stem\.flags: --output_dir is not a flag a benchmark takes per model"),
    (["--model=stem", "--verbose=2"], r"stem\.flags: --verbose is not a flag"),
    (["--model=mmoe"], r"stem\.flags: --model=mmoe, but the file is stem's"),
    (["--model=stem", "--learning_rate=fast"], r"stem\.flags: .*learning_rate"),
])
def test_a_flagfile_with_a_flag_the_benchmark_does_not_take_is_refused(lines, message,
                                                                       tiny_data, tmp_path):
  flags_dir = _flagfiles(tmp_path / "flags", stem=lines, mmoe=["--model=mmoe"])
  result = run_here("benchmark", f"--data_dir={tiny_data}", f"--model_flags_dir={flags_dir}",
                    "--models=mmoe,stem", "--epochs=1", f"--output_dir={tmp_path / 'out'}",
                    *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert_clean_error(result, message)
  assert not (tmp_path / "out").exists()


def test_a_model_without_a_flagfile_is_refused(tiny_data, tmp_path):
  flags_dir = _flagfiles(tmp_path / "flags", stem=["--model=stem"])
  result = run_here("benchmark", f"--data_dir={tiny_data}", f"--model_flags_dir={flags_dir}",
                    "--models=stem,ple", "--epochs=1", f"--output_dir={tmp_path / 'out'}",
                    cwd=tmp_path)
  assert_clean_error(result, r"--model_flags_dir: no flagfile .*ple\.flags for model ple")
  assert not (tmp_path / "out").exists()


def test_the_kuairand_pure_flagfiles_are_each_models_and_accepted():
  from stem_tfrs.cli import benchmark as benchmark_cli
  from tests.support import REPO
  directory = os.path.join(REPO, "experiments", "kuairand_pure")
  for model in MODEL_NAMES:
    values = benchmark_cli._flagfile_values(os.path.join(directory, f"{model}.flags"), model)
    assert values["model"] == model
  rates = {m: float(benchmark_cli._flagfile_values(os.path.join(directory, f"{m}.flags"),
                                                   m)["learning_rate"])
           for m in ("stem", "mmoe", "ple")}
  assert rates == {"stem": 1e-3, "mmoe": 1e-4, "ple": 1e-4}  # the authors' per-model rates
