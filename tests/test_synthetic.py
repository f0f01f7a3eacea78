"""data_prep.synthetic: determinism, positive rates, skew, and users whose tasks agree or diverge."""

import filecmp
import os

import numpy as np

from data_prep.synthetic import FEATURES, LABELS, World, generate, prepare_synthetic
from stem_tfrs.data.schema import Schema


def test_same_seed_gives_identical_files(tmp_path):
  prepare_synthetic(str(tmp_path / "a"), rows=3000, seed=5)
  prepare_synthetic(str(tmp_path / "b"), rows=3000, seed=5)
  names = sorted(os.listdir(tmp_path / "a"))
  assert names == sorted(os.listdir(tmp_path / "b"))
  _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b",
                                         [n for n in names if n != "vocab"], shallow=False)
  assert mismatch == [] and errors == []


def test_tiktok_schema_and_positive_rates(tmp_path):
  stats = prepare_synthetic(str(tmp_path / "d"), rows=40_000, seed=1)
  schema = Schema.load(str(tmp_path / "d"))
  assert schema.feature_names == FEATURES and schema.tasks == ["finish", "like"]
  assert schema.group_column == "uid"
  rates = stats["train"]["positive_rate"]
  assert 0.26 < rates["finish"] < 0.34
  assert 0.05 < rates["like"] < 0.10


def test_popularity_is_skewed():
  frame = next(generate(50_000, seed=3)).frame
  users = frame["uid"].value_counts().to_numpy()
  items = frame["item_id"].value_counts().to_numpy()
  top = lambda counts: counts[: max(len(counts) // 10, 1)].sum() / counts.sum()
  assert top(users) > 0.3 and top(items) > 0.3  # uniform would give 0.1


def test_some_users_agree_across_tasks_and_others_diverge():
  world = World(seed=0, num_users=2000, num_items=1000)
  a, b = world.taste["finish"], world.taste["like"]
  cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  assert (cosine > 0.8).mean() > 0.15 and (cosine < 0.3).mean() > 0.15


def test_chunks_are_reproducible_and_labels_binary():
  first = [c.frame for c in generate(250_000, seed=9)]
  again = [c.frame for c in generate(250_000, seed=9)]
  assert len(first) == 3 and sum(len(f) for f in first) == 250_000
  for x, y in zip(first, again):
    assert x.equals(y)
  assert set(np.unique(first[0][LABELS].to_numpy())) == {0, 1}
