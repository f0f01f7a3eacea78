"""stem_tfrs.evaluation.analysis: comparable-sample groups and gate shares."""

import numpy as np
import pandas as pd
import pytest

from stem_tfrs import build_model
from stem_tfrs.evaluation.analysis import (EPSILON, assign_groups, comparable_report, mean_gate_shares,
                                user_feedback_ratio)
from stem_tfrs.data.schema import Schema

from tests.support import tiny_model_config
from tests.test_pipeline import good_row, write_shard


def test_groups_follow_kappa_thresholds():
  rho = pd.Series({b"a": 1.0, b"b": 2.0, b"c": 2.01, b"d": 0.5, b"e": 0.49})
  users = np.array([b"a", b"b", b"c", b"d", b"e", b"zzz"])
  assert list(assign_groups(users, rho, kappa=2.0)) == [
      "comparable", "comparable", "A-dominant", "comparable", "B-dominant", "unseen"]
  with pytest.raises(ValueError, match="kappa"):
    assign_groups(users, rho, kappa=0.5)


def test_feedback_ratio_is_relative_to_global_positive_rates(tiny_data, tmp_path):
  import shutil
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = Schema.load(str(data))
  # u1: 2 of 2 finish, 0 of 2 like; u2: 0 of 2 finish, 2 of 2 like. Global rates 1/2, 1/2.
  rows = [good_row(uid=b"u1", finish=1, like=0)] * 2 + [good_row(uid=b"u2", finish=0, like=1)] * 2
  write_shard(data / "t.tfrecord", rows)
  schema.splits["train"] = ["t.tfrecord"]
  rho = user_feedback_ratio(schema, "finish", "like")
  assert rho[b"u1"] == pytest.approx((2 + EPSILON) / (0 + EPSILON))
  assert rho[b"u2"] == pytest.approx((0 + EPSILON) / (2 + EPSILON))


def test_comparable_report_gives_gap_to_single_task():
  labels = np.array([0, 1, 0, 1])
  groups = np.array(["comparable", "comparable", "A-dominant", "A-dominant"], dtype=object)
  perfect = {"t": np.array([0.1, 0.9, 0.2, 0.8]), "label/t": labels}
  reversed_ = {"t": np.array([0.9, 0.1, 0.8, 0.2]), "label/t": labels}
  report = comparable_report({"single_task": [perfect], "stem": [reversed_, perfect]}, ["t"],
                             groups)
  row = report[(report.model == "stem") & (report.group == "comparable")].iloc[0]
  assert row.auc_mean == 0.5 and row.auc_vs_single_task == -0.5
  assert row.auc_std == pytest.approx(np.std([0.0, 1.0], ddof=1))  # the sample std: 0.7071
  assert set(report.columns) >= {"group", "task", "model", "samples", "auc_mean", "auc_std"}


@pytest.mark.parametrize("name, other_tasks_zero", [("stem", False), ("ple", True),
                                                     ("mmoe", True)])
def test_gate_shares_sum_to_one(name, other_tasks_zero, tiny_data):
  from stem_tfrs import make_dataset
  schema = Schema.load(tiny_data)
  model = build_model(name, schema, tiny_model_config())
  shares = mean_gate_shares(model, make_dataset(schema, "valid", 512))
  assert set(shares) == {"finish", "like"}
  for s in shares.values():
    assert s["own"] + s["other_tasks"] + s["shared"] == pytest.approx(1.0, abs=1e-5)
    assert (s["other_tasks"] == 0) == other_tasks_zero
  if name == "mmoe":
    assert shares["finish"]["shared"] == pytest.approx(1.0)


def test_models_without_gates_have_no_gate_shares(tiny_data):
  from stem_tfrs import make_dataset
  schema = Schema.load(tiny_data)
  model = build_model("shared_bottom", schema, tiny_model_config())
  assert mean_gate_shares(model, make_dataset(schema, "valid", 512)) is None


def test_comparable_gaps_carry_seed_and_bootstrap_intervals():
  rng = np.random.default_rng(0)
  labels = (rng.random(1200) < 0.3).astype(int)
  groups = np.array(["comparable", "A-dominant", "B-dominant"] * 400, dtype=object)
  run = lambda seed, signal: {"t": signal * labels + np.random.default_rng(seed).normal(
      0, 1, 1200), "label/t": labels}
  predictions = {"single_task": [run(1, 0.0), run(2, 0.0), run(3, 0.0)],
                 "stem": [run(4, 1.5), run(5, 1.5), run(6, 1.5)]}
  report = comparable_report(predictions, ["t"], groups, replicates=100, seed=3)
  for row in report[report.model == "stem"].itertuples():
    assert 0 < row.gap_seed_low < row.auc_vs_single_task < row.gap_seed_high
    assert 0 < row.gap_boot_low < row.auc_vs_single_task < row.gap_boot_high
    assert row.gap_verdict == "stem better"
  assert (report[report.model == "single_task"].gap_verdict == "").all()
  again = comparable_report(predictions, ["t"], groups, replicates=100, seed=3)
  pd.testing.assert_frame_equal(report, again)
