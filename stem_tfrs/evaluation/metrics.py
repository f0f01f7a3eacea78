"""Reported metrics: exact AUC, gAUC and logloss per task.

Keras' `tf.keras.metrics.AUC` approximates the ROC curve with 200 thresholds;
it is good enough to watch training and stop early, not to report. The
numbers in metrics.json come from here: AUC as the Mann-Whitney statistic with
tied scores sharing their average rank (exact), and gAUC as defined in
shared/design/STEM.md.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional
import weakref

import numpy as np
import pandas as pd
import tensorflow as tf

from stem_tfrs.data.records import serving_input_signature
from stem_tfrs.data.schema import Schema

Metrics = Dict[str, Dict[str, float]]


def _average_ranks(scores: np.ndarray) -> np.ndarray:
  """1-based ranks of `scores`, ties sharing their average rank."""
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  group = np.repeat(np.arange(len(starts)), ends - starts)
  ranks = np.empty(len(scores), dtype=np.float64)
  ranks[order] = ((starts + 1 + ends) / 2.0)[group]
  return ranks


def auc(labels, scores) -> float:
  """Exact ROC AUC: P(score of a positive > score of a negative), ties count 1/2.

  Returns NaN when `labels` holds only one class, or a score is NaN (NaNs
  have no order).
  """
  labels = np.asarray(labels).astype(bool).ravel()
  scores = np.asarray(scores, dtype=np.float64).ravel()
  num_pos = int(labels.sum())
  num_neg = len(labels) - num_pos
  if num_pos == 0 or num_neg == 0 or np.isnan(scores).any():
    return float("nan")
  rank_sum = _average_ranks(scores)[labels].sum()
  return float((rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def group_auc(labels, scores, groups) -> float:
  """gAUC: per-group AUC averaged with weights = the group's number of samples.

  Groups whose labels are all one class have no AUC and are left out (of the
  numerator and of the weights). NaN if no group has both classes, or a
  score is NaN.
  """
  # Numbered first: integer groups hash faster than ids, and pandas would turn
  # fixed-width strings (`predict`'s bytes) back into one Python object a row.
  # Missing ids (None, NaN) stay missing, and out of every group, as pandas leaves them.
  groups = np.asarray(groups).ravel()
  codes = (np.unique(groups, return_inverse=True)[1].ravel() if groups.dtype.kind in "SU"
           else pd.factorize(groups)[0])
  frame = pd.DataFrame({"group": np.where(pd.isna(groups), np.nan, codes),
                        "label": np.asarray(labels, dtype=np.float64).ravel(),
                        "score": np.asarray(scores, dtype=np.float64).ravel()})
  if frame["score"].isna().any():
    return float("nan")
  frame["rank"] = frame.groupby("group", sort=False)["score"].rank(method="average")
  frame["positive_rank"] = frame["rank"] * frame["label"]
  per_group = frame.groupby("group", sort=False).agg(
      n=("label", "size"), pos=("label", "sum"), rank_sum=("positive_rank", "sum"))
  neg = per_group["n"] - per_group["pos"]
  usable = (per_group["pos"] > 0) & (neg > 0)
  if not usable.any():
    return float("nan")
  g = per_group[usable]
  aucs = (g["rank_sum"] - g["pos"] * (g["pos"] + 1) / 2.0) / (g["pos"] * neg[usable])
  return float((aucs * g["n"]).sum() / g["n"].sum())


def logloss(labels, probabilities, eps: float = 1e-7) -> float:
  """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
  y = np.asarray(labels, dtype=np.float64).ravel()
  p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), eps, 1.0 - eps)
  return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


#: model -> its inference tf.function, made once per model: a new tf.function
#: per call would trace again every time (and TensorFlow warns of it).
_INFERENCE = weakref.WeakKeyDictionary()


def _inference_function(model: tf.keras.Model):
  """`model(features, training=False)` as a tf.function, made once per model.

  The function holds the model by a weak reference, so that the cache does
  not keep a discarded model (and its weights) alive. A model with a schema
  is traced once, for batches of any size.
  """
  function = _INFERENCE.get(model)
  if function is None:
    model_ref = weakref.ref(model)
    schema = getattr(model, "schema", None)  # a stem_tfrs model: one trace, any batch size
    function = tf.function(
        lambda features: model_ref()(features, training=False), reduce_retracing=True,
        input_signature=[serving_input_signature(schema)] if schema is not None else None)
    _INFERENCE[model] = function
  return function


#: Longest string group id `predict` keeps in a fixed-width array: every row takes the longest
#: id's width, so a few long ids would cost more than Python objects.
_MAX_FIXED_WIDTH = 64


def predict(model: tf.keras.Model, dataset: tf.data.Dataset,
            group_column: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Runs `model` over a (features, labels) dataset: `predict_with` its inference function."""
  return predict_with(_inference_function(model), dataset, group_column)


def predict_with(infer: Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]],
                 dataset: tf.data.Dataset,
                 group_column: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Runs `infer` (features -> {task: probabilities}) over a (features, labels) dataset.

  (`predict` passes a Keras model's; a SavedModel's `serving_default`
  signature, called as `lambda features: signature(**features)`, fits too.)

  Returns:
    {"<task>": probabilities [N], "label/<task>": labels [N], and
    "group": the group column's raw values [N] if `group_column` is set;
    string ids as fixed-width bytes (numpy `S`: as many bytes a row as the
    longest id, where Python bytes objects took about 50-110; trailing NUL
    bytes of an id are dropped), or as Python bytes if an id is longer than
    `_MAX_FIXED_WIDTH` bytes}.
  """
  parts: Dict[str, list] = {}
  for features, labels in dataset:
    outputs = {task: p.numpy() for task, p in infer(features).items()}
    outputs.update({f"label/{task}": y.numpy() for task, y in labels.items()})
    if group_column is not None:
      group = features[group_column].numpy()
      if group.dtype == object:
        fixed = group.astype(bytes)
        group = fixed if fixed.itemsize <= _MAX_FIXED_WIDTH else group
      outputs["group"] = group
    for key, value in outputs.items():
      parts.setdefault(key, []).append(value)
  if not parts:
    raise ValueError("the evaluation dataset is empty")
  return {key: np.concatenate(values) for key, values in parts.items()}


def compute_metrics(predictions: Dict[str, np.ndarray], tasks) -> Metrics:
  """{task: {"logloss", "auc", "gauc"}} from `predict`'s output."""
  metrics = {}
  for task in tasks:
    y, p = predictions[f"label/{task}"], predictions[task]
    metrics[task] = {
        "logloss": logloss(y, p),
        "auc": auc(y, p),
        "gauc": group_auc(y, p, predictions["group"]) if "group" in predictions
                else float("nan"),
        "positive_rate": float(np.mean(y)),
        "examples": int(len(y)),
    }
  return metrics


def evaluate(model: tf.keras.Model, schema: Schema,
             dataset: tf.data.Dataset) -> Metrics:
  """Exact per-task logloss, AUC and gAUC of `model` on `dataset`."""
  return compute_metrics(predict(model, dataset, schema.group_column), schema.tasks)


def format_table(metrics: Dict[str, Metrics]) -> str:
  """A fixed-width table: one row per (split, task), columns logloss, AUC, gAUC."""
  lines = [f"{'split':<6} {'task':<16} {'logloss':>8} {'AUC':>8} {'gAUC':>8}"]
  for split, per_task in metrics.items():
    for task, m in per_task.items():
      lines.append(f"{split:<6} {task:<16} {m['logloss']:>8.4f} {m['auc']:>8.4f} "
                   f"{m['gauc']:>8.4f}")
  return "\n".join(lines)
