"""stem_tfrs.evaluation.intervals: paired seed and bootstrap intervals, and their verdicts."""

import numpy as np
import pandas as pd
import pytest

from stem_tfrs.evaluation import intervals, metrics

ROWS = 2000


def _runs(score_fn, seeds=3, rows=ROWS, data_seed=5):
  """One prediction dict per seed over the same rows: labels fixed, scores from score_fn."""
  labels = np.random.default_rng(data_seed).random(rows) < 0.2
  users = np.repeat(np.arange(rows // 20), 20).astype(str).astype(bytes)
  return [{"t": score_fn(labels, np.random.default_rng(100 + s)), "label/t": labels.astype(int),
           "group": users} for s in range(seeds)]


def _informed(labels, rng):
  return labels + rng.normal(0, 0.8, len(labels))


def _noise(labels, rng):
  return rng.normal(0, 1, len(labels))


def test_a_known_difference_is_found_and_named():
  predictions = {"good": _runs(_informed), "noise": _runs(_noise)}
  table = intervals.compare(predictions, ["t"], reference="good", replicates=200, seed=1)
  auc = table[table.metric == "auc"].iloc[0]
  assert auc.diff_mean > 0.2
  assert 0 < auc.seed_low < auc.diff_mean < auc.seed_high
  assert 0 < auc.boot_low < auc.diff_mean < auc.boot_high
  assert auc.verdict == "good better"
  turned = intervals.compare(predictions, ["t"], reference="noise", replicates=200, seed=1)
  assert turned[turned.metric == "auc"].iloc[0].verdict == "good better"
  assert table[table.metric == "gauc"].iloc[0].verdict == "good better"


def test_identical_score_distributions_are_within_noise():
  predictions = {"a": _runs(_informed), "b": _runs(_informed, data_seed=5)}
  # Same labels, scores drawn from the same distribution with other seeds.
  predictions["b"] = [dict(run, t=run["label/t"] + np.random.default_rng(900 + i).normal(
      0, 0.8, ROWS)) for i, run in enumerate(predictions["b"])]
  table = intervals.compare(predictions, ["t"], reference="a", replicates=200, seed=1)
  for row in table.itertuples():
    assert row.seed_low < 0 < row.seed_high, row
    assert row.verdict == intervals.WITHIN_NOISE
  auc = table[table.metric == "auc"].iloc[0]
  assert auc.boot_low < 0 < auc.boot_high


def test_bootstrap_auc_with_unit_counts_is_the_exact_auc():
  rng = np.random.default_rng(3)
  labels = rng.random(500) < 0.3
  scores = np.round(rng.random(500), 2)  # many ties: they count one half
  counts = np.ones((2, 500), dtype=np.int32)
  np.testing.assert_allclose(intervals.weighted_auc(labels, scores, counts),
                             metrics.auc(labels, scores), rtol=1e-12)


def test_bootstrap_auc_is_the_exact_auc_of_the_resampled_rows():
  rng = np.random.default_rng(4)
  labels = rng.random(300) < 0.4
  scores = np.round(rng.random(300), 1)
  counts = intervals.bootstrap_counts(300, 3, seed=9)
  assert (counts.sum(axis=1) == 300).all()
  for replicate, weights in zip(intervals.weighted_auc(labels, scores, counts), counts):
    rows = np.repeat(np.arange(300), weights)
    assert replicate == pytest.approx(metrics.auc(labels[rows], scores[rows]), rel=1e-12)


def test_the_same_seed_gives_the_same_intervals():
  predictions = {"good": _runs(_informed), "noise": _runs(_noise)}
  first = intervals.compare(predictions, ["t"], reference="good", replicates=50, seed=7)
  again = intervals.compare(predictions, ["t"], reference="good", replicates=50, seed=7)
  pd.testing.assert_frame_equal(first, again)
  other = intervals.compare(predictions, ["t"], reference="good", replicates=50, seed=8)
  assert other.boot_low.iloc[0] != first.boot_low.iloc[0]


def test_seed_interval_uses_student_t():
  result = intervals.seed_interval([0.72, 0.74, 0.75], [0.70, 0.70, 0.70])
  diffs = np.array([0.02, 0.04, 0.05])
  half = 4.303 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
  assert result["mean"] == pytest.approx(diffs.mean())
  assert (result["low"], result["high"]) == pytest.approx((diffs.mean() - half,
                                                          diffs.mean() + half))
  one = intervals.seed_interval([0.7], [0.6])
  assert one["mean"] == pytest.approx(0.1) and np.isnan(one["low"]) and np.isnan(one["high"])
  assert intervals.t_quantile(35) == intervals.T_975[30]  # between entries: the wider one
  with pytest.raises(ValueError, match="same seeds"):
    intervals.seed_interval([0.7, 0.8], [0.6])


def test_verdict_needs_every_interval_to_agree():
  assert intervals.verdict("stem", "mmoe", [(0.01, 0.02), (0.005, 0.03)]) == "stem better"
  assert intervals.verdict("stem", "mmoe", [(-0.02, -0.01), (float("nan"),) * 2]) == "mmoe better"
  assert intervals.verdict("stem", "mmoe", [(0.01, 0.02), (-0.001, 0.03)]) == "within noise"


def test_the_markdown_table_names_each_interval():
  predictions = {"good": _runs(_informed), "noise": _runs(_noise)}
  text = intervals.markdown(intervals.compare(predictions, ["t"], reference="good",
                                              replicates=20, seed=1, gauc=False))
  assert "| good - noise | t | auc | 3 | +0." in text and text.count("\n") == 3
