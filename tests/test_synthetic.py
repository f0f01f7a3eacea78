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


def test_task_divergence_zero_gives_each_user_one_taste_and_the_same_world():
  one = World(seed=4, num_users=500, num_items=300)
  zero = World(seed=4, num_users=500, num_items=300, task_divergence=0.0)
  np.testing.assert_allclose(zero.taste["finish"], zero.taste["like"])
  np.testing.assert_allclose(zero.user_bias["finish"], zero.user_bias["like"])
  assert not np.allclose(one.taste["finish"], one.taste["like"])
  for name in ("user_p", "item_p", "item_vec", "item_author", "author_like", "item_bias"):
    a, b = getattr(one, name), getattr(zero, name)
    for x, y in (zip(a.values(), b.values()) if isinstance(a, dict) else [(a, b)]):
      np.testing.assert_array_equal(x, y)  # only the users' mix depends on the knob


def test_task_divergence_lowers_the_agreement_of_each_users_tasks_step_by_step():
  def mean_cosine(d):
    world = World(seed=0, num_users=2000, num_items=100, task_divergence=d)
    a, b = world.taste["finish"], world.taste["like"]
    return ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean()
  cosines = [mean_cosine(d) for d in (0.0, 0.25, 0.5, 0.75, 1.0)]
  assert cosines[0] > 0.999 and all(x > y for x, y in zip(cosines, cosines[1:]))


def test_task_divergence_one_is_the_default_data(tmp_path):
  default = next(generate(5000, seed=6)).frame
  explicit = next(generate(5000, seed=6, task_divergence=1.0)).frame
  assert default.equals(explicit)
  assert not default.equals(next(generate(5000, seed=6, task_divergence=0.5)).frame)


def test_a_task_divergence_outside_zero_to_one_is_refused(tmp_path):
  import pytest
  for bad in (-0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match=r"task_divergence must be in \[0, 1\], got"):
      prepare_synthetic(str(tmp_path / "d"), rows=100, task_divergence=bad)
  assert not (tmp_path / "d").exists()
