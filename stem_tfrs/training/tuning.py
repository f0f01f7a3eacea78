"""Hyper-parameter search with KerasTuner: each trial is one `trainer.train` run.

    result = tuning.tune(ModelConfig(), TrainConfig(data_dir="data/tiktok"),
                         output_dir="tuning/stem", max_trials=20)
    result.best_model_config, result.best_train_config

KerasTuner's oracle proposes the values (random search or Bayesian
optimization over `SEARCH_SPACE`) and keeps the search's state in
`<output_dir>/search/`; each trial trains a full run into
`<output_dir>/trials/<trial id>/` and is scored on the validation split with
the exact metrics of `stem_tfrs.evaluation.metrics` (mean over tasks of AUC or gAUC).
Rerunning the same search in the same directory resumes it: finished trials are
kept, and a trial cut short by an interruption is run again, resuming from its
last finished epoch (its run directory keeps BackupAndRestore's state), or
scored from its run's metrics.json if its run had finished. A
trial whose training diverges is marked failed and the search goes on;
`FAILED_IN_A_ROW` failed trials in a row end it (and a rerun of it) with an
error.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
from typing import Dict, List, Tuple

from absl import logging
import keras_tuner

from stem_tfrs.training import trainer
from stem_tfrs.config import TUNE_OBJECTIVES as OBJECTIVES
from stem_tfrs.config import TUNERS, ConfigError, ModelConfig, TrainConfig
from stem_tfrs.training.distributed import refuse_cluster_strategy
from stem_tfrs.data.schema import Schema
from stem_tfrs.errors import first_line
from stem_tfrs.files import write_json
from stem_tfrs.errors import SearchFailed  # noqa: F401  (raised here; defined with the others)

#: The search space: (config, field) -> candidate values. Our reading of the
#: STEM-Net authors' search (expert counts, embedding L2, dropout, learning
#: rate, seed); their exact grids are not published.
SEARCH_SPACE: Dict[Tuple[str, str], list] = {
    ("model", "num_shared_experts"): [1, 2, 4, 8],
    ("model", "num_specific_experts"): [1, 2],
    ("model", "embedding_l2"): [0.0, 1e-7, 1e-6, 1e-5],
    ("model", "net_dropout"): [0.0, 0.1, 0.2],
    ("train", "learning_rate"): [1e-4, 3e-4, 1e-3],
    ("train", "seed"): [2023, 2024, 2025],
}
#: Failed trials in a row that end a search. (KerasTuner's own limit raises
#: before it saves the last trial, which a rerun would then train again.)
FAILED_IN_A_ROW = 3
_FAILED = keras_tuner.engine.trial.TrialStatus.FAILED


@dataclasses.dataclass
class TuneResult:
  """The search's trials and its best configuration."""
  trials: List[dict]            # one row per finished trial: id, values, score
  best_model_config: ModelConfig
  best_train_config: TrainConfig
  results_csv: str


def configs_for(values: Dict[str, object], model_config: ModelConfig,
                train_config: TrainConfig) -> Tuple[ModelConfig, TrainConfig]:
  """The base configs with a trial's values (keyed "<config>.<field>") put in."""
  fields = {"model": {}, "train": {}}
  for name, value in values.items():
    config, field = name.split(".", 1)
    fields[config][field] = value
  return (dataclasses.replace(model_config, **fields["model"]),
          dataclasses.replace(train_config, **fields["train"]))


class RunTuner(keras_tuner.Tuner):
  """A KerasTuner `Tuner` whose trial is a whole `trainer.train` run."""

  def __init__(self, oracle: keras_tuner.Oracle, model_config: ModelConfig,
               train_config: TrainConfig, trials_dir: str, **kwargs):
    super().__init__(oracle=oracle, **kwargs)
    self.base_model_config = model_config
    self.base_train_config = train_config
    self.trials_dir = trials_dir

  def run_trial(self, trial, *args, **kwargs) -> Dict[str, float]:
    hp = trial.hyperparameters
    values = {f"{c}.{f}": hp.Choice(f"{c}.{f}", candidates)
              for (c, f), candidates in SEARCH_SPACE.items()}
    model_config, train_config = configs_for(values, self.base_model_config,
                                             self.base_train_config)
    train_config = dataclasses.replace(
        train_config, run_dir=os.path.join(self.trials_dir, trial.trial_id), export_dir="")
    try:
      valid = trainer.train(model_config, train_config, verbose=0).metrics["valid"]
    except trainer.RunFinished as e:  # trained, but the search stopped before recording it
      logging.info("trial %s: %s holds its finished run: its metrics", trial.trial_id, e.run_dir)
      with open(os.path.join(e.run_dir, "metrics.json")) as f:
        valid = json.load(f)["valid"]
    except Exception as e:  # KerasTuner marks the trial failed, with the traceback in its state
      diverged = isinstance(e, trainer.TrainingDiverged)
      cause = str(e) if diverged else (
          f"{type(e).__name__}: {first_line(getattr(e, 'message', str(e)))}")
      failure = f"trial {trial.trial_id}: {cause}"
      logging.warning("%s", failure)
      if diverged:  # the same values would diverge again: a failed trial, not one to retry
        raise keras_tuner.errors.FailedTrialError(failure) from e
      raise
    return {f"val_{metric}": sum(m[metric] for m in valid.values()) / len(valid)
            for metric in OBJECTIVES}


def tune(model_config: ModelConfig, train_config: TrainConfig, output_dir: str,
         max_trials: int = 10, objective: str = "auc", tuner: str = "random") -> TuneResult:
  """Searches `SEARCH_SPACE` around the base configs; resumes a search in `output_dir`.

  The steps: check the arguments and the data; record the search's base (or
  check it against the one resumed); run the trials; pick the best and write
  results.csv.

  Args:
    model_config: Everything not searched: architecture and sizes.
    train_config: Data, epochs, batch size... (run_dir and export_dir are
      set per trial; trials do not export).
    output_dir: Holds the search state, the trials' runs and results.csv.
    max_trials: Trials in the whole search (a resumed search counts the
      finished ones).
    objective: "auc" or "gauc": the tasks' mean on the validation split.
    tuner: "random" (RandomSearch) or "bayesian" (BayesianOptimization).

  Returns:
    The finished trials, the best trial's configs and the path of results.csv.

  Raises:
    ConfigError: a bad objective, tuner or trial count.
    SearchFailed: `FAILED_IN_A_ROW` trials in a row failed (then, or in the
      search resumed), or no trial finished.
  """
  _check_search_arguments(train_config, max_trials, objective, tuner)
  schema = trainer.load_and_check(model_config, train_config)  # fail before any trial
  if objective == "gauc" and not schema.group_column:
    raise ConfigError(f"--objective=gauc needs a group column (the user id), and "
                      f"{schema.directory} has none: use --objective=auc")
  _check_same_search(output_dir, _search_base(model_config, train_config, schema,
                                              objective, tuner))
  trials = _run_search(model_config, train_config, output_dir, max_trials, objective, tuner)
  return _best_of(trials, model_config, train_config, output_dir, objective)


def _check_search_arguments(train_config: TrainConfig, max_trials: int, objective: str,
                            tuner: str) -> None:
  """A ConfigError unless the search's own arguments, and the strategy, can run a search."""
  if objective not in OBJECTIVES:
    raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")
  if tuner not in TUNERS:
    raise ConfigError(f"tuner must be one of {', '.join(TUNERS)}, got '{tuner}'")
  if tuner == "bayesian" and importlib.util.find_spec("sklearn") is None:
    raise ConfigError("--tuner=bayesian needs scikit-learn, which KerasTuner's Bayesian "
                      "optimization uses: pip install scikit-learn (or use --tuner=random)")
  if max_trials < 1:
    raise ConfigError(f"max_trials must be >= 1, got {max_trials}")
  refuse_cluster_strategy("tune", train_config)


def _search_base(model_config: ModelConfig, train_config: TrainConfig, schema: Schema,
                 objective: str, tuner: str) -> dict:
  """What the search's trials share, as search.json records it: settings, data, objective."""
  base = trainer.settings_and_data(model_config, train_config, schema)
  for config, field in SEARCH_SPACE:  # each trial sets its own
    del base[f"{config}_config"][field]
  return dict(base, objective=objective, tuner=tuner)


def _run_search(model_config: ModelConfig, train_config: TrainConfig, output_dir: str,
                max_trials: int, objective: str, tuner: str) -> List[dict]:
  """Runs (or resumes) the trials; the finished ones, or SearchFailed."""
  goal = keras_tuner.Objective(f"val_{objective}", direction="max")
  oracle_class = {"random": keras_tuner.oracles.RandomSearchOracle,
                  "bayesian": keras_tuner.oracles.BayesianOptimizationOracle}[tuner]
  oracle = _stopping_after_failures(oracle_class)(
      objective=goal, max_trials=max_trials, seed=train_config.seed,
      max_consecutive_failed_trials=None)
  search = RunTuner(oracle, model_config, train_config,
                    trials_dir=os.path.join(output_dir, "trials"),
                    directory=output_dir, project_name="search", overwrite=False)
  search.search()
  if failed_in_a_row(search.oracle) >= FAILED_IN_A_ROW:  # now, or in the run resumed
    raise SearchFailed(
        f"the search in {output_dir} stopped: {FAILED_IN_A_ROW} trials in a row failed; the "
        f"last, {_last_failure(search.oracle)}")
  trials = finished_trials(search)
  if not trials:
    raise SearchFailed(
        f"no trial of the search in {output_dir} finished"
        + (f"; the last to fail, {_last_failure(search.oracle)}" if search.oracle.end_order
           else ""))
  return trials


def _best_of(trials: List[dict], model_config: ModelConfig, train_config: TrainConfig,
             output_dir: str, objective: str) -> TuneResult:
  """The best trial's configs, with results.csv written."""
  best = max(trials, key=lambda row: row[f"val_{objective}"])
  best_model, best_train = configs_for(
      {k: v for k, v in best.items() if "." in k}, model_config, train_config)
  results_csv = os.path.join(output_dir, "results.csv")
  write_results(trials, results_csv)
  return TuneResult(trials=trials, best_model_config=best_model,
                    best_train_config=dataclasses.replace(best_train, run_dir=""),
                    results_csv=results_csv)


def failed_in_a_row(oracle: keras_tuner.Oracle) -> int:
  """How many of the search's last ended trials failed, counting back to one that did not."""
  count = 0
  for trial_id in reversed(oracle.end_order):
    if oracle.trials[trial_id].status != _FAILED:
      break
    count += 1
  return count


def _last_failure(oracle: keras_tuner.Oracle) -> str:
  """The last ended trial's failure, in one line, from the traceback KerasTuner kept:
  `RunTuner`'s wording of a divergence, or the exception's name and cause."""
  trial_id = oracle.end_order[-1]
  message = (oracle.trials[trial_id].message or "").strip()
  raised = list(re.finditer(r"^([\w.]+(?:Error|Exception)): ", message, re.M))
  if not raised:
    return f"trial {trial_id} failed"
  name, text = raised[-1].group(1), message[raised[-1].end():]  # "module.SomeError: what..."
  return first_line(text) if name.endswith("FailedTrialError") else (
      f"trial {trial_id}: {name.rsplit('.', 1)[-1]}: {first_line(text)}")


def _stopping_after_failures(oracle_class):
  """`oracle_class`, creating no trial once `FAILED_IN_A_ROW` trials in a row failed."""

  class StoppingOracle(oracle_class):
    def populate_space(self, trial_id):
      if failed_in_a_row(self) >= FAILED_IN_A_ROW:
        return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
      return super().populate_space(trial_id)

  return StoppingOracle


def _check_same_search(output_dir: str, search: dict) -> None:
  """Records the search's base in `output_dir`, or refuses to resume another search there.

  A resumed search counts its finished trials: under another base (model,
  data, sizes, epochs, objective) their scores would be another search's.
  """
  path = os.path.join(output_dir, "search.json")
  if os.path.isfile(path):
    with open(path) as f:
      before = json.load(f)
    if before != search:
      raise ConfigError(f"{output_dir} holds a search with another base "
                        f"({', '.join(_differences(before, search))}): rerun it with its own "
                        "flags to resume, or use another --output_dir")
    return
  os.makedirs(output_dir, exist_ok=True)
  write_json(path, search)


def _differences(before: dict, now: dict) -> List[str]:
  """The keys whose values differ, as "key" or, inside a dict value, "key.field"."""
  changed = []
  for key in sorted(before.keys() | now.keys()):
    old, new = before.get(key), now.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      changed += [f"{key}.{field}" for field in sorted(old.keys() | new.keys())
                  if old.get(field) != new.get(field)]
    elif old != new:
      changed.append(key)
  return changed


def finished_trials(search: keras_tuner.Tuner) -> List[dict]:
  """One row per completed trial, in trial order: id, searched values, metrics."""
  rows = []
  for trial_id, trial in sorted(search.oracle.trials.items()):
    if trial.status != keras_tuner.engine.trial.TrialStatus.COMPLETED:
      continue
    row = {"trial": trial_id}
    row.update({name: trial.hyperparameters.get(name)
                for name in (f"{c}.{f}" for c, f in SEARCH_SPACE)})
    for metric in OBJECTIVES:
      row[f"val_{metric}"] = trial.metrics.get_best_value(f"val_{metric}")
    rows.append(row)
  return rows


def write_results(rows: List[dict], path: str) -> None:
  """Writes results.csv: one row per finished trial, in trial order."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def format_results(rows: List[dict], objective: str) -> str:
  """A plain-text table of the trials, best first."""
  ordered = sorted(rows, key=lambda r: -r[f"val_{objective}"])
  names = list(ordered[0])
  widths = {n: max(len(n), *(len(_show(r[n])) for r in ordered)) for n in names}
  lines = ["  ".join(n.split(".")[-1].rjust(widths[n]) for n in names)]
  lines += ["  ".join(_show(r[n]).rjust(widths[n]) for n in names) for r in ordered]
  return "\n".join(lines)


def _show(value) -> str:
  return f"{value:.4f}" if isinstance(value, float) and 0.01 <= value < 1 else f"{value}"
