"""Fault drill of `export`: killed early, mid-write or at the rename, no version TF Serving could
load is left half-written, and the same command run again exports what an uninterrupted one does."""

import pytest

from tests.fault_drill import (assert_killed, assert_succeeded, files, run, run_whole,
                               temporaries)

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier

KILL_POINTS = {
    "early, before the weights are restored": ("stem_tfrs.training.checkpoints:load_weights", 1),
    "mid-write, the SavedModel written, its warmup file not yet":
        ("stem_tfrs.serving.warmup:write_warmup", 1),
    "at the rename that puts the version in place": ("tensorflow.io.gfile:rename@.tmp-", 1),
}
#: The SavedModel's graph holds names made per process; weights, assets and extras must agree.
SAME = ["saved_model.pb", "fingerprint.pb"]


def flags(run_dir):
  return ["export", f"--run_dir={run_dir}", "--export_dir=exports", "--version=7"]


@pytest.fixture(scope="module")
def whole(trained_run, tmp_path_factory):
  root = tmp_path_factory.mktemp("whole")
  assert_succeeded(run_whole(flags(trained_run.run_dir), cwd=root))
  return files(root / "exports", skip=SAME)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_export_killed_then_rerun_gives_the_uninterrupted_export(trained_run, whole, tmp_path,
                                                                 point):
  run_dir_before = files(trained_run.run_dir)
  target, nth = KILL_POINTS[point]
  assert_killed(run(flags(trained_run.run_dir), cwd=tmp_path, kill_at=target, nth=nth))
  base = tmp_path / "exports" / "stem"
  assert not base.exists() or not [n.name for n in base.iterdir() if n.name.isdigit()]

  assert_succeeded(run_whole(flags(trained_run.run_dir), cwd=tmp_path))
  assert files(tmp_path / "exports", skip=SAME) == whole
  assert temporaries(tmp_path) == []
  assert files(trained_run.run_dir) == run_dir_before  # an export only reads the run
