"""Exact AUC, gAUC and logloss against brute-force definitions."""

import itertools
import math

import numpy as np
import pytest

from stem_tfrs.evaluation.metrics import auc, format_table, group_auc, logloss


def brute_force_auc(labels, scores):
  pos = [s for y, s in zip(labels, scores) if y == 1]
  neg = [s for y, s in zip(labels, scores) if y == 0]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_pairwise_definition_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 300)
  scores = np.round(rng.random(300), 1)  # many ties
  assert auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_auc_of_perfect_reversed_and_constant_scores():
  labels = np.array([0, 0, 1, 1])
  assert auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert auc(labels, [0.5] * 4) == 0.5
  assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_group_auc_is_sample_weighted_mean_over_groups_with_both_classes():
  rng = np.random.default_rng(0)
  groups = rng.integers(0, 30, 2000)
  labels = rng.integers(0, 2, 2000)
  scores = np.round(rng.random(2000) + 0.3 * labels, 2)
  total, weight = 0.0, 0
  for g in np.unique(groups):
    y, s = labels[groups == g], scores[groups == g]
    if 0 < y.sum() < len(y):
      total += len(y) * brute_force_auc(y, s)
      weight += len(y)
  assert group_auc(labels, scores, groups) == pytest.approx(total / weight, abs=1e-12)


def test_group_auc_skips_one_class_groups_and_accepts_byte_ids():
  groups = np.array([b"u1", b"u1", b"u2", b"u2", b"u2"])
  labels = np.array([1, 0, 1, 1, 1])  # u2 has positives only
  assert group_auc(labels, [0.9, 0.1, 0.1, 0.2, 0.3], groups) == 1.0
  assert math.isnan(group_auc([1, 1], [0.2, 0.3], [b"a", b"b"]))


def test_a_nan_score_gives_nan_not_a_number_from_its_rank():
  labels, groups = [0, 1, 0, 1], ["u", "u", "v", "v"]
  assert np.isnan(auc(labels, [0.1, np.nan, 0.3, 0.4]))
  assert np.isnan(group_auc(labels, [0.1, np.nan, 0.3, 0.4], groups))
  assert np.isnan(auc(labels, [np.nan] * 4))
  assert np.isnan(group_auc(labels, [np.nan] * 4, groups))
  assert auc(labels, [0.1, 0.9, 0.5, 0.4]) == 0.75


def test_logloss_matches_formula_and_clips():
  y = np.array([1, 0, 1])
  p = np.array([0.9, 0.2, 0.6])
  expected = -np.mean([math.log(0.9), math.log(0.8), math.log(0.6)])
  assert logloss(y, p) == pytest.approx(expected)
  assert np.isfinite(logloss([1, 0], [0.0, 1.0]))


def test_format_table_has_a_row_per_split_and_task():
  metrics = {"test": {"finish": {"logloss": 0.5, "auc": 0.75, "gauc": 0.7},
                      "like": {"logloss": 0.2, "auc": 0.8, "gauc": 0.72}}}
  lines = format_table(metrics).splitlines()
  assert lines[0].split() == ["split", "task", "logloss", "AUC", "gAUC"]
  assert lines[2].split() == ["test", "like", "0.2000", "0.8000", "0.7200"]


@pytest.mark.slow
def test_predict_traces_a_model_once_and_lets_it_go(tiny_data):
  import gc
  import weakref
  from stem_tfrs import Schema, build_model, evaluation, make_dataset
  from stem_tfrs.evaluation import metrics
  from tests.support import tiny_model_config
  schema = Schema.load(tiny_data)
  model = build_model("stem", schema, tiny_model_config())
  for batch_size in (100, 333, 4096):  # full and partial batches of three sizes
    out = evaluation.predict(model, make_dataset(schema, "test", batch_size), schema.group_column)
    assert len(out["like"]) == len(out["label/like"]) == len(out["group"])
  assert metrics._INFERENCE[model].experimental_get_tracing_count() == 1
  gc.collect()  # models of earlier tests in this process, unreachable but not yet collected
  gone, cached = weakref.ref(model), len(metrics._INFERENCE)
  del model
  gc.collect()
  # The cache does not keep it alive, and drops its function with it.
  assert gone() is None and len(metrics._INFERENCE) == cached - 1


def test_predict_keeps_string_group_ids_as_fixed_width_bytes(tiny_data):
  # One Python bytes object a row took ~50-110 bytes: gigabytes over a 10M-row test split.
  from stem_tfrs import Schema, build_model, evaluation, make_dataset
  from tests.support import tiny_model_config
  schema = Schema.load(tiny_data)
  model = build_model("stem", schema, tiny_model_config())
  out = evaluation.predict(model, make_dataset(schema, "test", 333), schema.group_column)
  raw = np.concatenate([f[schema.group_column].numpy()
                        for f, _ in make_dataset(schema, "test", 333)])
  assert raw.dtype == object and out["group"].dtype.kind == "S"
  assert out["group"].tolist() == raw.tolist()
  assert out["group"].itemsize == max(len(v) for v in raw)
  labels, scores = out["label/like"], out["like"]
  assert evaluation.group_auc(labels, scores, out["group"]) == pytest.approx(
      evaluation.group_auc(labels, scores, raw), abs=1e-12)


def test_group_auc_leaves_rows_with_a_missing_id_out_of_every_group():
  rng = np.random.default_rng(3)
  labels, scores = rng.integers(0, 2, 400), rng.random(400)
  ids = rng.integers(0, 12, 400).astype(float)
  missing = rng.random(400) < 0.25
  ids[missing] = np.nan
  names = np.array([None if m else f"u{int(v)}" for v, m in zip(ids, missing)], dtype=object)
  for groups in (ids, names):
    assert group_auc(labels, scores, groups) == pytest.approx(
        group_auc(labels[~missing], scores[~missing], groups[~missing]), abs=1e-12)


def test_predict_keeps_long_group_ids_as_python_bytes(tiny_data):
  # Every row of a fixed-width array takes the longest id's width.
  import tensorflow as tf
  from stem_tfrs import Schema, build_model, evaluation, make_dataset
  from tests.support import tiny_model_config
  schema = Schema.load(tiny_data)
  model = build_model("stem", schema, tiny_model_config())
  features, labels = next(iter(make_dataset(schema, "test", 3)))
  ids = [b"u1", b"u" * 65, b"u2"]
  features = dict(features, **{schema.group_column: tf.constant(ids)})
  out = evaluation.predict(model, tf.data.Dataset.from_tensors((features, labels)),
                           schema.group_column)
  assert out["group"].dtype == object and out["group"].tolist() == ids
