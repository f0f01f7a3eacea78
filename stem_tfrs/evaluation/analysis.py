"""The paper's analyses: comparable-sample groups (negative transfer) and gate weights.

Comparable samples (shared/design/STEM.md, last section). The paper's exact
thresholds are not public; this is our reading. For user u and task t,

    r_{u,t} = (positives of u in t / samples of u) / (global positive rate of t)

measured on the *train* split, so that grouping the test samples uses no test
labels. For two tasks A and B, rho_u = (r_{u,A} + eps) / (r_{u,B} + eps) with
eps = 0.01. A sample of user u is

    comparable   if 1/kappa <= rho_u <= kappa   (kappa = 2 by default)
    A-dominant   if rho_u > kappa
    B-dominant   if rho_u < 1/kappa
    unseen       if u has no train samples (left out of the report).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from stem_tfrs import evaluation
from stem_tfrs.data import pipeline
from stem_tfrs.data.schema import Schema
from stem_tfrs.evaluation import intervals

EPSILON = 0.01
GROUPS = ("comparable", "A-dominant", "B-dominant")


def user_feedback_ratio(schema: Schema, task_a: str, task_b: str, split: str = "train",
                        batch_size: int = 65_536) -> pd.Series:
  """rho_u per user (index: the raw group-column value as bytes), from `split`."""
  frames = []
  for features, labels in pipeline.make_dataset(schema, split, batch_size):
    frames.append(pd.DataFrame({"user": features[schema.group_column].numpy(),
                                "a": labels[task_a].numpy(), "b": labels[task_b].numpy()}))
  frame = pd.concat(frames, ignore_index=True)
  rate_a, rate_b = frame["a"].mean(), frame["b"].mean()
  per_user = frame.groupby("user").mean()
  r_a = per_user["a"] / max(rate_a, 1e-12)
  r_b = per_user["b"] / max(rate_b, 1e-12)
  return (r_a + EPSILON) / (r_b + EPSILON)


def assign_groups(users: np.ndarray, rho: pd.Series, kappa: float) -> np.ndarray:
  """Group label of each sample, from its user's rho (see the module docstring)."""
  if kappa < 1.0:
    raise ValueError(f"kappa must be >= 1, got {kappa}")
  values = rho.reindex(pd.Index(users)).to_numpy()
  groups = np.full(len(users), "unseen", dtype=object)
  groups[values > kappa] = "A-dominant"
  groups[values < 1.0 / kappa] = "B-dominant"
  groups[(values >= 1.0 / kappa) & (values <= kappa)] = "comparable"
  return groups


def sample_std(values: Sequence[float]) -> float:
  """The sample standard deviation (n - 1) of `values`; NaN (undefined) for a single value."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def comparable_report(predictions: Dict[str, List[Dict[str, np.ndarray]]], tasks: Sequence[str],
                      groups: np.ndarray, baseline: Optional[str] = "single_task",
                      replicates: int = 0, seed: int = 0) -> pd.DataFrame:
  """AUC per (group, task, model), mean and sample std over seeds, and its gap to `baseline`.

  Args:
    predictions: model -> one `evaluation.predict` output per seed, all over
      the same test samples in the same order.
    tasks: Tasks to report.
    groups: Group label per test sample (`assign_groups`).
    baseline: Model whose AUC the others are compared to (NaN gap if absent).
    replicates: Bootstrap replicates of the gap's interval (0: seed interval
      only; see `stem_tfrs.evaluation.intervals`).
    seed: Seed of the bootstrap draws.

  Returns:
    Columns group, task, model, samples, auc_mean, auc_std, auc_vs_<baseline>
    (negative = negative transfer relative to the baseline), then the gap's
    95% intervals: gap_seed_low, gap_seed_high (paired by seed),
    gap_boot_low, gap_boot_high (paired bootstrap over the group's test
    rows) and gap_verdict ("<model> better", "<baseline> better" or
    "within noise"; empty for the baseline itself).
  """
  rows = []
  for group in GROUPS:
    mask = groups == group
    for task in tasks:
      for model, seeds in predictions.items():
        aucs = [evaluation.auc(p[f"label/{task}"][mask], p[task][mask]) for p in seeds]
        rows.append({"group": group, "task": task, "model": model, "samples": int(mask.sum()),
                     "auc_mean": float(np.mean(aucs)), "auc_std": sample_std(aucs)})
  report = pd.DataFrame(rows)
  column = f"auc_vs_{baseline}"
  gap_columns = ["gap_seed_low", "gap_seed_high", "gap_boot_low", "gap_boot_high"]
  report[column] = float("nan")
  for name in gap_columns:
    report[name] = float("nan")
  report["gap_verdict"] = ""
  if baseline not in predictions:
    return report
  base = report[report["model"] == baseline].set_index(["group", "task"])["auc_mean"]
  report[column] = report["auc_mean"] - base.reindex(
      pd.MultiIndex.from_frame(report[["group", "task"]])).to_numpy()
  for group in GROUPS:
    mask = groups == group
    if not mask.any() or len(predictions) < 2:
      continue
    # baseline - model, once per group (the baseline's bootstrap is shared), then turned round.
    table = intervals.compare(predictions, tasks, reference=baseline, replicates=replicates,
                              seed=seed, mask=mask, gauc=False)
    for r in table.itertuples():
      at = (report["group"] == group) & (report["task"] == r.task) & (report["model"] == r.baseline)
      report.loc[at, gap_columns] = [-r.seed_high, -r.seed_low, -r.boot_high, -r.boot_low]
      report.loc[at, "gap_verdict"] = intervals.verdict(
          r.baseline, baseline, [(-r.seed_high, -r.seed_low), (-r.boot_high, -r.boot_low)])
  return report


def mean_gate_shares(model: tf.keras.Model,
                     batches: Iterable) -> Optional[Dict[str, Dict[str, float]]]:
  """Mean gate weight task t puts on its own, other tasks' and shared experts.

  Returns:
    {task: {"own": x, "other_tasks": x, "shared": x}} averaged over every
    sample of `batches` ((features, labels) pairs), or None if the model has
    no gates.
  """
  sums: Dict[str, np.ndarray] = {}
  count = 0
  for features, _ in batches:
    gates = model.gate_weights(features)
    if gates is None:
      return None
    for task, (weights, owners) in gates.items():
      owners = np.array(owners)
      w = weights.numpy()
      shares = np.array([w[:, owners == task].sum(), w[:, owners == "shared"].sum(),
                         w[:, (owners != task) & (owners != "shared")].sum()])
      sums[task] = sums.get(task, 0) + shares
    count += int(w.shape[0])
  if not count:
    return None
  return {task: {"own": float(s[0] / count), "shared": float(s[1] / count),
                 "other_tasks": float(s[2] / count)} for task, s in sums.items()}
