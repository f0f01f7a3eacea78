"""Fault drill of `predict`: killed early, mid-write or at the rename, no half-written scores are
left where the output goes, and the same command run again writes what an uninterrupted one does."""

import pandas as pd
import pytest

from tests.fault_drill import assert_killed, assert_succeeded, run, run_whole, temporaries
from tests.test_export import raw_batch

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier

KILL_POINTS = {
    "early, before the first chunk is written": ("pandas:DataFrame.to_csv", 1),
    "mid-write, two chunks written of five": ("pandas:DataFrame.to_csv", 3),
    "at the rename that puts the scores in place": ("os:replace@.tmp-", 1),
}


def flags(saved_model):
  return ["predict", f"--saved_model={saved_model}", "--input=rows.csv", "--output=scores.csv",
          "--keep_columns=uid", "--eval_batch_size=100"]


@pytest.fixture(scope="module")
def rows(trained_run, tmp_path_factory):
  """500 rows of raw features (every fourth id unseen), and the scores an uninterrupted run writes."""
  root = tmp_path_factory.mktemp("whole")
  pd.DataFrame(raw_batch(trained_run.model.schema, n=500)).to_csv(root / "rows.csv", index=False)
  assert_succeeded(run_whole(flags(trained_run.export_path), cwd=root))
  return (root / "rows.csv").read_bytes(), (root / "scores.csv").read_bytes()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_predict_killed_then_rerun_gives_the_uninterrupted_scores(trained_run, rows, tmp_path,
                                                                  point):
  features, scores = rows
  (tmp_path / "rows.csv").write_bytes(features)
  target, nth = KILL_POINTS[point]
  assert_killed(run(flags(trained_run.export_path), cwd=tmp_path, kill_at=target, nth=nth))
  assert not (tmp_path / "scores.csv").exists()

  assert_succeeded(run_whole(flags(trained_run.export_path), cwd=tmp_path))
  assert (tmp_path / "scores.csv").read_bytes() == scores
  assert (tmp_path / "rows.csv").read_bytes() == features
  assert temporaries(tmp_path) == []
