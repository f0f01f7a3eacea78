"""A fair, resumable comparison: every model x every seed on the same prepared data.

Every model is trained by `trainer.train` with the same data, embeddings,
towers, optimizer, stopping rule and metrics; only `--model` and the seed
change. Output directory:

    <output_dir>/runs/<model>/seed-<seed>/   one training run each (config.json,
                                             metrics.json, ..., predictions.npz,
                                             summary.json; failed.json if it
                                             diverged)
    <output_dir>/results.csv, .json, .md    per model and task: mean and sample std
                                             (n - 1) over seeds of test AUC, gAUC,
                                             logloss; parameters, training time,
                                             examples/s; the runs that failed
    <output_dir>/auc.png                    test AUC, models x tasks, error bars
    <output_dir>/comparable.csv, .png       AUC per comparable-sample group, and
                                             the gap to single_task (with two tasks
                                             and a group column)
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
from stem_tfrs.evaluation import analysis
from stem_tfrs.training import callbacks, checkpoints, trainer
from stem_tfrs.config import ConfigError, ModelConfig, TrainConfig
from stem_tfrs.training.distributed import refuse_cluster_strategy
from stem_tfrs.files import write_json
from stem_tfrs.models import MODEL_NAMES, MODELS, build_model, global_dtype_policy
from stem_tfrs.data.schema import Schema

SUMMARY = "summary.json"
FAILED = "failed.json"
STARTED = "settings.json"  # a run's settings and data, written before it trains
METRICS = ("auc", "gauc", "logloss")
#: Every report file, in the order the final message lists them.
REPORT_FILES = ("results.csv", "results.json", "results.md", "auc.png", "comparable.csv",
                "comparable.png", "gates.csv", "gates.png")


@dataclasses.dataclass
class BenchmarkReport:
  """What `run_benchmark` produced.

  Attributes:
    results: One row per (model, task) over the runs that finished (see `aggregate`).
    failed: One entry per run that diverged: model, seed, run_dir, reason.
    files: The report files written in the output directory, by name.
  """
  results: pd.DataFrame
  failed: List[dict]
  files: List[str]


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
  """
  models: Tuple[str, ...]
  seeds: int = 1
  output_dir: str = "benchmark"
  kappa: float = 2.0
  comparable_tasks: Optional[Tuple[str, str]] = None

  def __post_init__(self):
    unknown = [m for m in self.models if m not in MODEL_NAMES]
    if unknown or not self.models:
      raise ConfigError(f"unknown model(s) {unknown}; choose from: {', '.join(MODEL_NAMES)}"
                        if unknown else "give at least one model")
    if self.seeds < 1:
      raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
    if self.kappa < 1.0:
      raise ConfigError(f"kappa must be >= 1, got {self.kappa}")


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
  """The run's `name` file (summary or failure) if it was written under `expected`."""
  record = _read(run_dir, name)
  return record if record is not None and record.get("config") == expected else None


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


def markdown(results: pd.DataFrame, failed: Sequence[dict] = ()) -> str:
  """results.md: the results table, then one line per failed run."""
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
  return text


def _mean_std(mean: float, std: float) -> str:
  return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def _bar_chart(path: str, frame: pd.DataFrame, value: str, error: Optional[str], title: str,
               ylabel: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  groups = list(dict.fromkeys(frame["x"]))
  series = list(dict.fromkeys(frame["series"]))
  width = 0.8 / max(len(series), 1)
  bars = len(groups) * max(len(series), 1)
  fig, ax = plt.subplots(figsize=(min(16, max(7, 0.18 * bars + 3)), 4.5))
  for i, name in enumerate(series):
    part = frame[frame["series"] == name].set_index("x").reindex(groups)
    positions = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
    ax.bar(positions, part[value], width,
           yerr=part[error] if error else None, capsize=2, label=str(name))
  ax.set_xticks(np.arange(len(groups)))
  ax.set_xticklabels(groups, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize="small", ncol=2 if len(series) > 5 else 1)
  values = frame[value].to_numpy(dtype=float)
  spread = frame[error].fillna(0.0).to_numpy(dtype=float) if error else 0.0
  low, high = values - spread, values + spread
  shown = np.isfinite(low) & np.isfinite(high)
  if value.startswith("auc") and shown.any() and low[shown].min() > 0:
    # AUCs differ in the second decimal: a zoomed axis, with every error bar inside it.
    ax.set_ylim(max(0.0, low[shown].min() - 0.05), min(1.0, high[shown].max() + 0.03))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _comparable(out: str, schema: Schema, predictions: Dict[str, List[dict]],
                tasks: Tuple[str, str], kappa: float) -> None:
  """Writes comparable.csv and .png: AUC by comparable-sample group (see `stem_tfrs.evaluation.analysis`)."""
  task_a, task_b = tasks
  first = next(iter(predictions.values()))[0]
  rho = analysis.user_feedback_ratio(schema, task_a, task_b)
  groups = analysis.assign_groups(first["group"], rho, kappa)
  comparable = analysis.comparable_report(predictions, schema.tasks, groups)
  comparable.insert(0, "kappa", kappa)
  comparable.insert(1, "task_a", task_a)
  comparable.insert(2, "task_b", task_b)
  comparable.to_csv(os.path.join(out, "comparable.csv"), index=False)
  chart = comparable[comparable["model"] != "single_task"].copy()
  if "single_task" in predictions and not chart.empty:
    value, error, title, ylabel = ("auc_vs_single_task", None,
                                   "Test AUC minus single_task's, by sample group",
                                   "AUC gap (negative = negative transfer)")
  else:  # no gap to show: each model's AUC per group
    chart = comparable.copy()
    value, error, title, ylabel = "auc_mean", "auc_std", "Test AUC by sample group", "AUC"
  chart["x"] = chart["group"] + " / " + chart["task"]
  _bar_chart(os.path.join(out, "comparable.png"), chart.rename(columns={"model": "series"}),
             value, error, f"{title} (kappa={kappa:g})", ylabel)


def _remove_reports(out: str, keep: Sequence[str]) -> None:
  """Removes the report files in `out` that are not in `keep`."""
  for name in set(REPORT_FILES) - set(keep):
    if os.path.exists(os.path.join(out, name)):
      os.remove(os.path.join(out, name))


def run_benchmark(model_config: ModelConfig, train_config: TrainConfig,
                  bench: BenchmarkConfig, verbose: int = 0) -> BenchmarkReport:
  """Trains every (model, seed), then writes the reports over the runs that finished.

  Raises:
    ConfigError, SchemaError: before any run trains.
    trainer.TrainingDiverged: every run diverged (each has its failed.json).
  """
  refuse_cluster_strategy("benchmark", train_config)
  schema = trainer.load_and_check(model_config, train_config)
  comparable_tasks = bench.comparable_tasks
  if comparable_tasks is not None:
    if set(comparable_tasks) - set(schema.tasks) or not schema.group_column:
      raise ConfigError(f"comparable tasks {list(comparable_tasks)} must be two of the data's "
                        f"tasks {schema.tasks}, and the data needs a group column")
  elif len(schema.tasks) >= 2 and schema.group_column:
    comparable_tasks = tuple(schema.tasks[:2])
  out = bench.output_dir
  # Every (model, seed) is checked before the first one trains.
  for model in bench.models:
    MODELS[model].check_config(model_config)
  configs = [dataclasses.replace(train_config, model=model, seed=train_config.seed + offset,
                                 export_dir="", run_dir=os.path.join(
                                     out, "runs", model, f"seed-{train_config.seed + offset}"))
             for model in bench.models for offset in range(bench.seeds)]
  os.makedirs(out, exist_ok=True)
  summaries, failed, predictions = [], [], {}
  for config in configs:
    logging.info("benchmark: %s, seed %d", config.model, config.seed)
    summary = run_one(model_config, config, schema, verbose=verbose)
    if "failed" in summary:
      failed.append({"model": config.model, "seed": config.seed, "run_dir": config.run_dir,
                     "failed": summary["failed"]})
      continue
    summaries.append(summary)
    with np.load(os.path.join(config.run_dir, "predictions.npz"), allow_pickle=False) as npz:
      predictions.setdefault(config.model, []).append({k: npz[k] for k in npz.files})
  if not summaries:
    _remove_reports(out, keep=())  # an earlier benchmark's would pass for this one's
    raise trainer.TrainingDiverged(
        f"every run of the benchmark diverged (the first: {failed[0]['model']}, "
        f"{failed[0]['failed']}); see failed.json under {os.path.join(out, 'runs')}")

  results = aggregate(summaries, schema.tasks)
  results.to_csv(os.path.join(out, "results.csv"), index=False)
  write_json(os.path.join(out, "results.json"), {
      "results": results.to_dict(orient="records"),
      "runs": [{k: s[k] for k in ("model", "seed", "metrics", "params", "train_seconds",
                                  "examples_per_second")} for s in summaries],
      "failed": failed})
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(markdown(results, failed))
  _bar_chart(os.path.join(out, "auc.png"),
             results.rename(columns={"model": "x", "task": "series"}), "auc_mean", "auc_std",
             "Test AUC (mean ± std over seeds)", "AUC")
  written = ["results.csv", "results.json", "results.md", "auc.png"]

  if comparable_tasks is None:
    logging.info("no comparable-sample analysis: it needs two tasks and a group column")
  else:
    _comparable(out, schema, predictions, comparable_tasks, bench.kappa)
    written += ["comparable.csv", "comparable.png"]

  gates = gate_table(summaries)
  gates.to_csv(os.path.join(out, "gates.csv"), index=False)
  written.append("gates.csv")
  if not gates.empty:
    long = gates.melt(id_vars=["model", "task"], var_name="series", value_name="weight")
    long["x"] = long["model"] + " / " + long["task"]
    _bar_chart(os.path.join(out, "gates.png"), long, "weight", None,
               "Mean gate weight on own, other tasks' and shared experts (test split)",
               "gate weight")
    written.append("gates.png")
  _remove_reports(out, keep=written)  # an earlier benchmark's, now out of date
  return BenchmarkReport(results=results, failed=failed,
                         files=[name for name in REPORT_FILES if name in written])
