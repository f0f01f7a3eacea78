"""Error bars for a model comparison: is a difference in test AUC more than noise?

Two intervals for the difference reference - baseline (e.g. STEM - MMoE) of
one task's test metric, both at 95% confidence:

- **Seed interval** (paired by seed): the runs of both models with the same
  seed position form a pair; the interval is the mean of the paired
  differences +- t * sd / sqrt(n), Student's t with n - 1 degrees of freedom.
  It measures the noise of training (initialisation, shuffling). There is no
  scipy here: `T_975` is a small table of t quantiles, and a number of degrees
  of freedom between two entries takes the lower one (a slightly wider,
  conservative interval).
- **Bootstrap interval** over test rows (paired): each replicate draws the
  test rows with replacement, the same draw for both models and every seed;
  the replicate's statistic is the AUC difference averaged over seeds; the
  interval is the 2.5th and 97.5th percentile over replicates. It measures
  the noise of a small test split (a few hundred positives of a rare task).
  The AUC of a replicate is the Mann-Whitney statistic with the draw counts as
  weights, ties counting one half, as the exact `metrics.auc`: with every
  count 1 the two agree.

A verdict says which model is better only when every interval that is
defined excludes 0 on the same side; otherwise it says "within noise".
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from stem_tfrs.evaluation import metrics

LEVEL = 0.95
#: Student's t, 0.975 quantile (two-sided 95%), by degrees of freedom.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
         30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
WITHIN_NOISE = "within noise"
#: Replicates per chunk of the bootstrap: bounds its memory to a few (chunk x rows) arrays.
_CHUNK = 100


def t_quantile(dof: int) -> float:
  """Student's t 0.975 quantile for `dof` >= 1 degrees of freedom (from `T_975`)."""
  if dof < 1:
    raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
  return T_975[max(d for d in T_975 if d <= dof)]


def seed_interval(reference: Sequence[float], baseline: Sequence[float]) -> Dict[str, float]:
  """Mean paired difference reference - baseline and its 95% t interval.

  Args:
    reference, baseline: One value per seed, paired by position.

  Returns:
    {"mean": d, "low": l, "high": h, "pairs": n}; low and high are NaN for
    fewer than two pairs (or a NaN value).
  """
  a = np.asarray(reference, dtype=np.float64)
  b = np.asarray(baseline, dtype=np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired values need the same seeds: {len(a)} against {len(b)}")
  diff = a - b
  mean = float(np.mean(diff)) if len(diff) else float("nan")
  if len(diff) < 2 or not np.isfinite(diff).all():
    return {"mean": mean, "low": float("nan"), "high": float("nan"), "pairs": len(diff)}
  half = t_quantile(len(diff) - 1) * float(np.std(diff, ddof=1)) / np.sqrt(len(diff))
  return {"mean": mean, "low": mean - half, "high": mean + half, "pairs": len(diff)}


def bootstrap_counts(rows: int, replicates: int, seed: int) -> np.ndarray:
  """How often each of `rows` test rows is drawn in each replicate: int32 [replicates, rows]."""
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, rows, size=(replicates, rows))
  draws += np.arange(replicates)[:, None] * rows
  return np.bincount(draws.ravel(), minlength=replicates * rows).reshape(
      replicates, rows).astype(np.int32)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """AUC of each bootstrap replicate: Mann-Whitney with `counts` as row weights.

  The rows are sorted by score once; each replicate then needs only sums of
  its weights over runs of tied scores.

  Args:
    labels: [rows] 0/1.
    scores: [rows] model scores.
    counts: [replicates, rows] weight of each row in each replicate.

  Returns:
    [replicates] float64 AUCs; NaN where a replicate holds one class only or a
    score is NaN.
  """
  labels = np.asarray(labels).astype(bool).ravel()
  scores = np.asarray(scores, dtype=np.float64).ravel()
  counts = np.atleast_2d(counts)
  if np.isnan(scores).any():
    return np.full(len(counts), np.nan)
  order = np.argsort(scores, kind="mergesort")
  sorted_scores, sorted_labels = scores[order], labels[order]
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  result = np.empty(len(counts), dtype=np.float64)
  for first in range(0, len(counts), _CHUNK):
    weights = counts[first:first + _CHUNK][:, order].astype(np.float64)
    positive = np.add.reduceat(weights * sorted_labels, starts, axis=1)
    negative = np.add.reduceat(weights * ~sorted_labels, starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative  # negatives scored lower than the tie group
    wins = (positive * (below + 0.5 * negative)).sum(axis=1)
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
      result[first:first + _CHUNK] = np.where(pairs > 0, wins / pairs, np.nan)
  return result


def _seed_mean_bootstrap(runs: Sequence[Dict[str, np.ndarray]], task: str, counts: np.ndarray,
                         mask: Optional[np.ndarray]) -> np.ndarray:
  """[replicates] bootstrap AUC of `task`, averaged over a model's seeds."""
  aucs = []
  for run in runs:
    labels, scores = run[f"label/{task}"], run[task]
    if mask is not None:
      labels, scores = labels[mask], scores[mask]
    aucs.append(weighted_auc(labels, scores, counts))
  return np.mean(aucs, axis=0)


def _per_seed(runs: Sequence[Dict[str, np.ndarray]], task: str, metric: str,
              mask: Optional[np.ndarray]) -> List[float]:
  values = []
  for run in runs:
    keep = slice(None) if mask is None else mask
    labels, scores = run[f"label/{task}"][keep], run[task][keep]
    if metric == "auc":
      values.append(metrics.auc(labels, scores))
    else:
      values.append(metrics.group_auc(labels, scores, run["group"][keep]))
  return values


def verdict(reference: str, baseline: str, intervals: Sequence[Sequence[float]]) -> str:
  """`reference` or `baseline` "better" if every defined (low, high) excludes 0 on its side."""
  defined = [(low, high) for low, high in intervals if np.isfinite(low) and np.isfinite(high)]
  if defined and all(low > 0 for low, _ in defined):
    return f"{reference} better"
  if defined and all(high < 0 for _, high in defined):
    return f"{baseline} better"
  return WITHIN_NOISE if defined else "no interval"


def compare(predictions: Dict[str, List[Dict[str, np.ndarray]]], tasks: Sequence[str],
            reference: str, baselines: Optional[Sequence[str]] = None,
            replicates: int = 1000, seed: int = 0, mask: Optional[np.ndarray] = None,
            gauc: bool = True) -> pd.DataFrame:
  """`reference` against each baseline, per task: mean difference, both intervals, verdict.

  Args:
    predictions: model -> one `metrics.predict` output per seed ({task: scores,
      "label/<task>": labels, "group": ids}), every run over the same test rows
      in the same order; seeds are paired by position.
    tasks: Tasks to compare.
    reference: The model compared with the others (e.g. "stem").
    baselines: Models to compare it with (default: every other model).
    replicates: Bootstrap replicates (0: no bootstrap interval).
    seed: Seed of the bootstrap draws: the same seed gives the same intervals.
    mask: [rows] bool, the test rows to compare on (e.g. a sample group);
      default every row.
    gauc: Also compare gAUC (seed interval only: per-user AUCs do not
      resample row by row).

  Returns:
    One row per (baseline, task, metric): reference, baseline, task, metric,
    seeds (pairs), reference_mean, baseline_mean, diff_mean, seed_low,
    seed_high, boot_low, boot_high (NaN for gAUC), verdict.

  Raises:
    ValueError: `reference` has no predictions, or the runs' rows differ.
  """
  if reference not in predictions:
    raise ValueError(f"reference model '{reference}' has no predictions; "
                     f"models: {sorted(predictions)}")
  baselines = [m for m in (baselines or predictions) if m != reference]
  rows_of = {len(run[f"label/{tasks[0]}"]) for runs in predictions.values() for run in runs}
  if len(rows_of) > 1:
    raise ValueError(f"runs have different numbers of test rows {sorted(rows_of)}; "
                     "compare runs over the same test split")
  rows = rows_of.pop() if mask is None else int(np.sum(mask))
  counts = bootstrap_counts(rows, replicates, seed) if replicates and rows else None
  boot_cache: Dict[tuple, np.ndarray] = {}

  def boot(model: str, task: str) -> np.ndarray:
    if (model, task) not in boot_cache:
      boot_cache[model, task] = _seed_mean_bootstrap(predictions[model], task, counts, mask)
    return boot_cache[model, task]

  records = []
  for baseline in baselines:
    pairs = min(len(predictions[reference]), len(predictions[baseline]))
    for task in tasks:
      for metric in ("auc", "gauc") if gauc else ("auc",):
        ref = _per_seed(predictions[reference][:pairs], task, metric, mask)
        base = _per_seed(predictions[baseline][:pairs], task, metric, mask)
        seeds = seed_interval(ref, base)
        boot_low = boot_high = float("nan")
        if metric == "auc" and counts is not None:
          diffs = boot(reference, task) - boot(baseline, task)
          if np.isfinite(diffs).any():
            boot_low, boot_high = (float(v) for v in np.nanpercentile(diffs, [2.5, 97.5]))
        records.append({
            "reference": reference, "baseline": baseline, "task": task, "metric": metric,
            "seeds": pairs, "reference_mean": float(np.mean(ref)),
            "baseline_mean": float(np.mean(base)), "diff_mean": seeds["mean"],
            "seed_low": seeds["low"], "seed_high": seeds["high"],
            "boot_low": boot_low, "boot_high": boot_high,
            "verdict": verdict(reference, baseline, [(seeds["low"], seeds["high"]),
                                                     (boot_low, boot_high)])})
  return pd.DataFrame(records, columns=COLUMNS)


COLUMNS = ["reference", "baseline", "task", "metric", "seeds", "reference_mean",
           "baseline_mean", "diff_mean", "seed_low", "seed_high", "boot_low", "boot_high",
           "verdict"]


def interval_text(low: float, high: float) -> str:
  """"[l, h]" with signs, or "-" when undefined (NaN, or None as JSON writes NaN)."""
  if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
    return "-"
  return f"[{low:+.4f}, {high:+.4f}]"


def markdown(table: pd.DataFrame) -> str:
  """A markdown table of `compare`'s rows."""
  lines = ["| reference - baseline | task | metric | seeds | difference | seed 95% CI "
           "| bootstrap 95% CI | verdict |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in table.itertuples():
    lines.append(f"| {r.reference} - {r.baseline} | {r.task} | {r.metric} | {r.seeds} | "
                 f"{r.diff_mean:+.4f} | {interval_text(r.seed_low, r.seed_high)} | "
                 f"{interval_text(r.boot_low, r.boot_high)} | {r.verdict} |")
  return "\n".join(lines) + "\n"
