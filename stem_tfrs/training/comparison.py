"""A fair, resumable comparison: every model x every seed on the same prepared data.

Every model is trained by `trainer.train` on the same data with the same
metrics. By default every model also gets the same settings and only
`--model` and the seed change; with per-model settings (`run_benchmark`'s
`settings`, the CLI's `--model_flags_dir`) each model runs with its own, and
the reports say which. The flow: `configure` (check everything before the
first run trains), `train_and_predict` (each model and seed), `aggregate`,
`analyses` (intervals, comparable samples, gates), `write_reports`.
Output directory:

    <output_dir>/runs/<model>/seed-<seed>/   one training run each (config.json,
                                             metrics.json, ..., predictions.npz,
                                             summary.json; failed.json if it
                                             diverged)
    <output_dir>/results.csv, .json, .md    per model and task: mean and sample std
                                             (n - 1) over seeds of test AUC, gAUC,
                                             logloss; parameters, training time,
                                             examples/s; the runs that failed; each
                                             model's settings; the intervals below
                                             (results.json holds every analysis,
                                             for `evaluation.results_page`)
    <output_dir>/intervals.csv              the reference model (STEM) against each
                                             baseline, per task and sample group:
                                             difference, seed and bootstrap 95%
                                             intervals, verdict (`evaluation.intervals`)
    <output_dir>/auc.png                    test AUC, models x tasks, error bars
    <output_dir>/comparable.csv, .png       AUC per comparable-sample group, and
                                             the gap to single_task with its
                                             intervals (with two tasks and a group
                                             column)
    <output_dir>/gates.csv, .png            gate weight on own / other / shared experts

A run whose `summary.json` exists and whose configuration and data (resolved
path, rows, vocabularies) match is reused, so re-invoking after a crash
retrains only what had not finished, and data prepared again is trained on
again. A run cut short resumes from its last finished epoch (or, cut after
training, goes on from its best checkpoint and metrics.json). A run that
diverges (`trainer.TrainingDiverged`) is recorded in its `failed.json` and
reported as failed; the others are compared without it, and a rerun with
the same settings does not train it again. Every (model, seed)
configuration is checked before the first trains.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import pandas as pd
import tensorflow as tf

from stem_tfrs import evaluation
from stem_tfrs.data import pipeline
from stem_tfrs.evaluation import analysis, intervals, results_page
from stem_tfrs.training import callbacks, checkpoints, trainer
from stem_tfrs.config import ConfigError, ModelConfig, TrainConfig
from stem_tfrs.training.distributed import refuse_cluster_strategy
from stem_tfrs.files import write_json
from stem_tfrs.models import MODEL_NAMES, MODELS, build_model, global_dtype_policy
from stem_tfrs.data.schema import Schema, load_stats

SUMMARY = "summary.json"
FAILED = "failed.json"
STARTED = "settings.json"  # a run's settings and data, written before it trains
METRICS = ("auc", "gauc", "logloss")
#: Every report file, in the order the final message lists them.
REPORT_FILES = ("results.csv", "results.json", "results.md", "intervals.csv", "auc.png",
                "comparable.csv", "comparable.png", "gates.csv", "gates.png")
#: Settings a run of the benchmark sets itself, left out of the reported settings.
_OWN_SETTINGS = ("model", "seed", "run_dir", "export_dir")
#: One model's settings: model -> (ModelConfig, TrainConfig).
Settings = Dict[str, Tuple[ModelConfig, TrainConfig]]


@dataclasses.dataclass
class BenchmarkReport:
  """What `run_benchmark` produced.

  Attributes:
    results: One row per (model, task) over the runs that finished (see `aggregate`).
    failed: One entry per run that diverged: model, seed, run_dir, reason.
    files: The report files written in the output directory, by name.
    intervals: The reference model against each baseline (`intervals.compare`
      rows, with a group column: "all" test rows, or a comparable-sample group).
  """
  results: pd.DataFrame
  failed: List[dict]
  files: List[str]
  intervals: Optional[pd.DataFrame] = None


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  """What to compare.

  Attributes:
    models: Registry names, in report order.
    seeds: Seeds per model: train_config.seed, seed + 1, ...
    output_dir: Where runs and reports go.
    kappa: Comparable-sample threshold (see `stem_tfrs.evaluation.analysis`).
    comparable_tasks: The tasks (A, B) of the comparable-sample analysis;
      default: the first two tasks.
    reference: The model compared with every other, with intervals; default
      stem if compared, else the first model.
    replicates: Bootstrap replicates of the intervals (0: seed intervals only).
  """
  models: Tuple[str, ...]
  seeds: int = 1
  output_dir: str = "benchmark"
  kappa: float = 2.0
  comparable_tasks: Optional[Tuple[str, str]] = None
  reference: Optional[str] = None
  replicates: int = 1000

  def __post_init__(self):
    unknown = [m for m in self.models if m not in MODEL_NAMES]
    if unknown or not self.models:
      raise ConfigError(f"unknown model(s) {unknown}; choose from: {', '.join(MODEL_NAMES)}"
                        if unknown else "give at least one model")
    if self.seeds < 1:
      raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
    if self.kappa < 1.0:
      raise ConfigError(f"kappa must be >= 1, got {self.kappa}")
    if self.reference is not None and self.reference not in self.models:
      raise ConfigError(f"reference model '{self.reference}' is not one of the compared "
                        f"models {list(self.models)}")
    if self.replicates < 0:
      raise ConfigError(f"bootstrap replicates must be >= 0, got {self.replicates}")

  @property
  def reference_model(self) -> str:
    """The model compared with every other: `reference`, else stem, else the first."""
    return self.reference or ("stem" if "stem" in self.models else self.models[0])


def _read(run_dir: str, name: str) -> Optional[dict]:
  path = os.path.join(run_dir, name)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError:  # cut short by a crash: as if absent
      return None


def _recorded(run_dir: str, name: str, expected: dict) -> Optional[dict]:
  """The run's `name` file (summary or failure) if it was written under `expected` (a run
  recorded before a setting existed counts with what it ran with)."""
  record = _read(run_dir, name)
  if record is None or not isinstance(record.get("config"), dict):
    return None
  return record if trainer.with_predating_settings(record["config"]) == expected else None


def _trained(run_dir: str) -> bool:
  """Whether `trainer.train` finished in `run_dir`: metrics.json, its last file, is there."""
  return all(os.path.isfile(os.path.join(run_dir, name))
             for name in ("training.json", "metrics.json", "checkpoints/best.index"))


def _best_model(model_config: ModelConfig, config: TrainConfig, schema: Schema):
  """The finished run's model, built as `trainer.train` builds it, with its best weights."""
  with global_dtype_policy(config.mixed_precision):
    model = build_model(config.model, schema, model_config)
  checkpoints.load_weights(model, os.path.join(config.run_dir, "checkpoints", "best"))
  return model


def run_one(model_config: ModelConfig, config: TrainConfig, schema: Schema,
            verbose: int = 0) -> dict:
  """Trains one (model, seed), saves its test predictions and gate shares; returns its summary.

  A run that diverges returns {"model", "seed", "config", "failed": reason}
  instead, also written to its failed.json.
  """
  # Reused on the same settings and data, wherever the output directory lies.
  expected = trainer.settings_and_data(model_config, config, schema)
  for name in (SUMMARY, FAILED):
    record = _recorded(config.run_dir, name, expected)
    if record is not None:
      logging.info("reusing %s run %s", "finished" if name == SUMMARY else "failed",
                   config.run_dir)
      return record
  started = _read(config.run_dir, STARTED) == expected
  tf.keras.backend.clear_session()
  if started and _trained(config.run_dir):  # stopped after training, before the summary
    logging.info("evaluating the trained run %s", config.run_dir)
    model = _best_model(model_config, config, schema)
    metrics = _read(config.run_dir, "metrics.json")
  else:
    if started and callbacks.epochs_done(config.run_dir):
      logging.info("resuming interrupted run %s", config.run_dir)
    else:  # nothing, another run, or one that had not finished an epoch
      shutil.rmtree(config.run_dir, ignore_errors=True)
      os.makedirs(config.run_dir)
      write_json(os.path.join(config.run_dir, STARTED), expected)
    try:
      result = trainer.train(model_config, config, verbose=verbose)
    except trainer.TrainingDiverged as e:
      failure = {"model": config.model, "seed": config.seed, "config": expected,
                 "failed": str(e)}
      write_json(os.path.join(config.run_dir, FAILED), failure)
      logging.warning("%s, seed %d: %s", config.model, config.seed, e)
      return failure
    model, metrics = result.model, result.metrics
  test = pipeline.make_dataset(schema, "test", config.eval_batch_size)
  predictions = evaluation.predict(model, test, schema.group_column)
  np.savez_compressed(os.path.join(config.run_dir, "predictions.npz"),
                      **{k: v.astype(bytes) if v.dtype == object else v
                         for k, v in predictions.items()})
  gates = analysis.mean_gate_shares(model, test)
  with open(os.path.join(config.run_dir, "training.json")) as f:
    history = json.load(f)
  summary = {
      "model": config.model, "seed": config.seed, "config": expected,
      "metrics": metrics, "gates": gates,
      "params": int(model.count_params()),
      "train_seconds": history["train_seconds"],
      "examples_per_second": history["train_examples_per_second"],
  }
  write_json(os.path.join(config.run_dir, SUMMARY), summary)  # last: it marks the run finished
  return summary


def aggregate(summaries: List[dict], tasks: Sequence[str]) -> pd.DataFrame:
  """One row per (model, task): test metrics' mean and sample std over seeds, size, speed."""
  rows = []
  for model in dict.fromkeys(s["model"] for s in summaries):
    runs = [s for s in summaries if s["model"] == model]
    for task in tasks:
      row = {"model": model, "task": task, "seeds": len(runs)}
      for metric in METRICS:
        values = [r["metrics"]["test"][task][metric] for r in runs]
        row[f"{metric}_mean"] = float(np.mean(values))
        row[f"{metric}_std"] = analysis.sample_std(values)
      row["params"] = runs[0]["params"]
      row["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
      row["examples_per_second"] = float(np.mean([r["examples_per_second"] for r in runs]))
      rows.append(row)
  return pd.DataFrame(rows)


def gate_table(summaries: List[dict]) -> pd.DataFrame:
  rows = []
  for model in dict.fromkeys(s["model"] for s in summaries):
    runs = [s["gates"] for s in summaries if s["model"] == model and s["gates"]]
    if not runs:
      continue
    for task in runs[0]:
      row = {"model": model, "task": task}
      for share in ("own", "other_tasks", "shared"):
        row[share] = float(np.mean([r[task][share] for r in runs]))
      rows.append(row)
  return pd.DataFrame(rows, columns=["model", "task", "own", "other_tasks", "shared"])


def markdown(results: pd.DataFrame, failed: Sequence[dict] = (),
             settings: Optional[Dict[str, dict]] = None,
             compared: Optional[pd.DataFrame] = None) -> str:
  """results.md: the results table, one line per failed run, the settings, the intervals."""
  lines = ["| model | task | seeds | test AUC | test gAUC | test logloss | params | train s "
           "| examples/s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in results.itertuples():
    lines.append(
        f"| {r.model} | {r.task} | {r.seeds} | {_mean_std(r.auc_mean, r.auc_std)} | "
        f"{_mean_std(r.gauc_mean, r.gauc_std)} | {_mean_std(r.logloss_mean, r.logloss_std)} | "
        f"{r.params:,} | {r.train_seconds:.0f} | {r.examples_per_second:,.0f} |")
  text = ("Test metrics, mean ± sample std (n - 1) over each model's seeds (no std for one).\n\n"
          + "\n".join(lines) + "\n")
  if failed:
    text += "\nFailed, left out of the table:\n\n" + "".join(
        f"- {f['model']}, seed {f['seed']}: {f['failed']}\n" for f in failed)
  if settings:
    text += "\n" + results_page.settings_table(settings)
  if compared is not None and not compared.empty:
    every_row = compared[compared["group"] == "all"]
    text += ("\nDifferences on the test split, with 95% intervals: paired by seed (Student t) "
             "and a paired bootstrap over test rows (stem_tfrs/evaluation/intervals.py). "
             "\"within noise\": an interval contains 0.\n\n" + intervals.markdown(every_row))
  return text


def _mean_std(mean: float, std: float) -> str:
  return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


@dataclasses.dataclass
class BenchmarkPlan:
  """What `configure` checked: the runs to train, and the analyses' parameters.

  Attributes:
    schema: The data every model trains on.
    bench: What to compare.
    runs: (ModelConfig, TrainConfig) per model and seed, in report order.
    settings: Per model, the settings it runs with, as the reports show them.
    comparable_tasks: Tasks (A, B) of the comparable-sample analysis, or None.
  """
  schema: Schema
  bench: BenchmarkConfig
  runs: List[Tuple[ModelConfig, TrainConfig]]
  settings: Dict[str, dict]
  comparable_tasks: Optional[Tuple[str, str]]


def _reported_settings(model_config: ModelConfig, config: TrainConfig) -> dict:
  train = {k: v for k, v in dataclasses.asdict(config).items() if k not in _OWN_SETTINGS}
  train["data_dir"] = os.path.realpath(config.data_dir)
  return json.loads(json.dumps(dict(dataclasses.asdict(model_config), **train)))


def configure(model_config: ModelConfig, train_config: TrainConfig, bench: BenchmarkConfig,
              settings: Optional[Settings] = None) -> BenchmarkPlan:
  """Checks every (model, seed) and the data before the first run trains.

  Args:
    model_config, train_config: Every model's settings, unless `settings` has its own.
    bench: What to compare.
    settings: model -> its own (ModelConfig, TrainConfig); a model it lacks
      runs with `model_config` and `train_config`. Every model must name the
      same data.

  Raises:
    ConfigError, SchemaError: naming what is wrong.
  """
  settings = dict(settings or {})
  own = {m: settings.get(m, (model_config, train_config)) for m in bench.models}
  data = {m: os.path.realpath(c.data_dir) for m, (_, c) in own.items()}
  if len(set(data.values())) > 1:
    first = bench.models[0]
    other = next(m for m in bench.models if data[m] != data[first])
    raise ConfigError(f"every model of a benchmark trains on the same data: {first} has "
                      f"data_dir {data[first]}, {other} has {data[other]}")
  for model, (m_config, t_config) in own.items():
    refuse_cluster_strategy("benchmark", t_config)
    MODELS[model].check_config(m_config)
  schema = trainer.load_and_check(*own[bench.models[0]])
  for model in bench.models[1:]:
    trainer.load_and_check(*own[model])
  comparable_tasks = bench.comparable_tasks
  if comparable_tasks is not None:
    if set(comparable_tasks) - set(schema.tasks) or not schema.group_column:
      raise ConfigError(f"comparable tasks {list(comparable_tasks)} must be two of the data's "
                        f"tasks {schema.tasks}, and the data needs a group column")
  elif len(schema.tasks) >= 2 and schema.group_column:
    comparable_tasks = tuple(schema.tasks[:2])
  runs = []
  for model in bench.models:
    m_config, t_config = own[model]
    for offset in range(bench.seeds):
      seed = t_config.seed + offset
      runs.append((m_config, dataclasses.replace(
          t_config, model=model, seed=seed, export_dir="",
          run_dir=os.path.join(bench.output_dir, "runs", model, f"seed-{seed}"))))
  return BenchmarkPlan(schema=schema, bench=bench, runs=runs,
               settings={m: _reported_settings(*own[m]) for m in bench.models},
               comparable_tasks=comparable_tasks)


def train_and_predict(plan: BenchmarkPlan, verbose: int = 0) -> Tuple[List[dict], List[dict],
                                                              Dict[str, List[dict]]]:
  """Trains (or reuses) every run of `plan`.

  Returns:
    (summaries of the runs that finished, failures, model -> one test
    prediction dict per finished seed).
  """
  os.makedirs(plan.bench.output_dir, exist_ok=True)
  summaries, failed, predictions = [], [], {}
  for model_config, config in plan.runs:
    logging.info("benchmark: %s, seed %d", config.model, config.seed)
    summary = run_one(model_config, config, plan.schema, verbose=verbose)
    if "failed" in summary:
      failed.append({"model": config.model, "seed": config.seed, "run_dir": config.run_dir,
                     "failed": summary["failed"]})
      continue
    summaries.append(summary)
    with np.load(os.path.join(config.run_dir, "predictions.npz"), allow_pickle=False) as npz:
      predictions.setdefault(config.model, []).append({k: npz[k] for k in npz.files})
  return summaries, failed, predictions


def analyses(plan: BenchmarkPlan, summaries: List[dict],
             predictions: Dict[str, List[dict]]) -> Dict[str, Optional[pd.DataFrame]]:
  """The reference model's intervals, the comparable-sample report and the gate shares.

  Returns:
    {"intervals": rows of `intervals.compare` with a group column ("all",
    then each comparable-sample group), "comparable": `analysis.comparable_report`
    with kappa, task_a, task_b columns (None without two tasks and a group
    column), "gates": `gate_table`}.
  """
  bench, schema = plan.bench, plan.schema
  reference = bench.reference_model
  frames = []
  groups = None
  if plan.comparable_tasks is not None:
    task_a, task_b = plan.comparable_tasks
    first = next(iter(predictions.values()))[0]
    rho = analysis.user_feedback_ratio(schema, task_a, task_b)
    groups = analysis.assign_groups(first["group"], rho, bench.kappa)
  if reference in predictions and len(predictions) > 1:
    frames.append(intervals.compare(predictions, schema.tasks, reference,
                                    replicates=bench.replicates, seed=0).assign(group="all"))
    for group in analysis.GROUPS if groups is not None else ():
      if (groups == group).any():
        frames.append(intervals.compare(
            predictions, schema.tasks, reference, replicates=bench.replicates, seed=0,
            mask=groups == group, gauc=False).assign(group=group))
  elif reference not in predictions:
    logging.warning("no intervals: every run of the reference model %s failed", reference)
  compared = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame(columns=intervals.COLUMNS + ["group"]))
  compared = compared[["group"] + intervals.COLUMNS]
  comparable = None
  if groups is None:
    logging.info("no comparable-sample analysis: it needs two tasks and a group column")
  else:
    comparable = analysis.comparable_report(predictions, schema.tasks, groups,
                                            replicates=bench.replicates, seed=0)
    comparable.insert(0, "kappa", bench.kappa)
    comparable.insert(1, "task_a", plan.comparable_tasks[0])
    comparable.insert(2, "task_b", plan.comparable_tasks[1])
  return {"intervals": compared, "comparable": comparable, "gates": gate_table(summaries)}


def _data_description(schema: Schema) -> dict:
  stats = load_stats(schema.directory)
  return {"data_dir": os.path.realpath(schema.directory),
          "name": os.path.basename(os.path.realpath(schema.directory)),
          "tasks": list(schema.tasks),
          "rows": {split: part.get("rows") for split, part in stats.items()
                   if isinstance(part, dict) and "rows" in part}}


def _records(frame: Optional[pd.DataFrame]) -> Optional[List[dict]]:
  """`frame`'s rows as JSON-ready dicts, NaN as None (JSON has no NaN), at full precision."""
  if frame is None:
    return None
  return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def write_reports(plan: BenchmarkPlan, results: pd.DataFrame, failed: List[dict], summaries: List[dict],
                  tables: Dict[str, Optional[pd.DataFrame]]) -> List[str]:
  """Writes the report files of `REPORT_FILES` that apply; removes an earlier run's others."""
  out, bench = plan.bench.output_dir, plan.bench
  compared, comparable, gates = tables["intervals"], tables["comparable"], tables["gates"]
  results.to_csv(os.path.join(out, "results.csv"), index=False)
  compared.to_csv(os.path.join(out, "intervals.csv"), index=False)
  write_json(os.path.join(out, "results.json"), {
      "results": _records(results),
      "runs": [{k: s[k] for k in ("model", "seed", "metrics", "params", "train_seconds",
                                  "examples_per_second")} for s in summaries],
      "failed": failed,
      "benchmark": {"models": list(bench.models), "seeds": bench.seeds, "kappa": bench.kappa,
                    "comparable_tasks": (list(plan.comparable_tasks)
                                         if plan.comparable_tasks else None),
                    "reference": bench.reference_model, "replicates": bench.replicates,
                    "confidence": intervals.LEVEL},
      "data": _data_description(plan.schema),
      "settings": plan.settings,
      "intervals": _records(compared),
      "comparable": _records(comparable),
      "gates": _records(gates)})
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(markdown(results, failed, plan.settings, compared))
  plots = results_page.plotting("python main.py benchmark")
  results_page.bar_chart(plots, os.path.join(out, "auc.png"),
                         results.rename(columns={"model": "x", "task": "series"}), "auc_mean",
                         "auc_std", "Test AUC (mean ± std over seeds)", "AUC")
  written = ["results.csv", "results.json", "results.md", "intervals.csv", "auc.png"]
  if comparable is not None:
    comparable.to_csv(os.path.join(out, "comparable.csv"), index=False)
    results_page.comparable_chart(plots, os.path.join(out, "comparable.png"), comparable)
    written += ["comparable.csv", "comparable.png"]
  gates.to_csv(os.path.join(out, "gates.csv"), index=False)
  written.append("gates.csv")
  if not gates.empty:
    results_page.gate_chart(plots, os.path.join(out, "gates.png"), gates)
    written.append("gates.png")
  _remove_reports(out, keep=written)  # an earlier benchmark's, now out of date
  return [name for name in REPORT_FILES if name in written]


def _remove_reports(out: str, keep: Sequence[str]) -> None:
  """Removes the report files in `out` that are not in `keep`."""
  for name in set(REPORT_FILES) - set(keep):
    if os.path.exists(os.path.join(out, name)):
      os.remove(os.path.join(out, name))


def run_benchmark(model_config: ModelConfig, train_config: TrainConfig,
                  bench: BenchmarkConfig, verbose: int = 0,
                  settings: Optional[Settings] = None) -> BenchmarkReport:
  """Trains every (model, seed), then writes the reports over the runs that finished.

  Args:
    model_config, train_config: Every model's settings (run dir, export dir,
      model and seed are the benchmark's), unless `settings` has its own.
    bench: What to compare.
    verbose: Keras fit verbosity.
    settings: model -> its own (ModelConfig, TrainConfig) (see `configure`).

  Raises:
    ConfigError, SchemaError: before any run trains.
    trainer.TrainingDiverged: every run diverged (each has its failed.json).
  """
  plan = configure(model_config, train_config, bench, settings)
  summaries, failed, predictions = train_and_predict(plan, verbose=verbose)
  if not summaries:
    _remove_reports(bench.output_dir, keep=())  # an earlier benchmark's would pass for this one's
    raise trainer.TrainingDiverged(
        f"every run of the benchmark diverged (the first: {failed[0]['model']}, "
        f"{failed[0]['failed']}); see failed.json under "
        f"{os.path.join(bench.output_dir, 'runs')}")
  results = aggregate(summaries, plan.schema.tasks)
  tables = analyses(plan, summaries, predictions)
  files = write_reports(plan, results, failed, summaries, tables)
  return BenchmarkReport(results=results, failed=failed, files=files,
                         intervals=tables["intervals"])
