"""Fault drill of `train`: killed early, mid-training or at the rename of its metrics, the same
command run again finishes the run an interruption never hit (same metrics, same history)."""

import json

import pytest

from tests.support import TINY_MODEL_FLAGS
from tests.fault_drill import assert_killed, assert_succeeded, run, run_whole, temporaries

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier

KILL_POINTS = {
    # config.json is written; not a step trained.
    "early, as the first dataset is made": ("stem_tfrs.data.pipeline:make_dataset", 1),
    # Epoch 1 finished: its checkpoint and backup are written.
    "mid-training, as the second epoch begins":
        ("stem_tfrs.training.callbacks:ResumedCallbackState.on_epoch_begin", 2),
    # Trained and evaluated; training.json written, metrics.json not yet in place.
    "at the rename that puts metrics.json in place": ("tensorflow.io.gfile:rename@metrics.json", 1),
}


def flags(data_dir):
  return ["train", f"--data_dir={data_dir}", "--run_dir=run", "--export_dir=", "--epochs=2",
          "--batch_size=512", "--learning_rate=0.003", "--seed=5", "--deterministic",
          "--verbose=0", *TINY_MODEL_FLAGS]


def outcome(run_dir):
  """What a finished run reports: its metrics and its per-epoch history."""
  metrics = json.loads((run_dir / "metrics.json").read_text())
  history = json.loads((run_dir / "training.json").read_text())["history"]
  return metrics, history


@pytest.fixture(scope="module")
def whole(tiny_data, tmp_path_factory):
  root = tmp_path_factory.mktemp("whole")
  assert_succeeded(run_whole(flags(tiny_data), cwd=root))
  return outcome(root / "run")


@pytest.mark.parametrize("point", KILL_POINTS)
def test_train_killed_then_rerun_finishes_the_uninterrupted_run(tiny_data, whole, tmp_path,
                                                                  point):
  target, nth = KILL_POINTS[point]
  assert_killed(run(flags(tiny_data), cwd=tmp_path, kill_at=target, nth=nth))
  assert not (tmp_path / "run" / "metrics.json").exists()

  assert_succeeded(run_whole(flags(tiny_data), cwd=tmp_path))
  assert outcome(tmp_path / "run") == whole
  assert temporaries(tmp_path) == []
  assert not (tmp_path / "run" / "backup").exists()
