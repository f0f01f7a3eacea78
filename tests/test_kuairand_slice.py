"""The real KuaiRand-Pure slice in ../shared/data/kuairand_pure_slice prepares, and STEM-Net
trains on it: one epoch at the study's configuration (issue 27's table), evaluated per task.

Skipped, with the path in the reason, where ../shared is absent: the slice is read in place and
never copied into the repository.
"""

import json
import math
import os

import pytest

from tests.test_kuairand import SLICE

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(SLICE),
                                 reason=f"no KuaiRand-Pure slice at {os.path.abspath(SLICE)}")]

#: The study's model (the configuration of issue 27's table), trained for one epoch.
STUDY_FLAGS = dict(embedding_dim=16, num_shared_experts=4, num_specific_experts=1,
                   expert_hidden_units=(256, 128), gate_hidden_units=(64,),
                   tower_hidden_units=(64,), embedding_l2=1e-6)


def test_stem_trains_one_epoch_on_the_real_slice_and_learns_every_task(tmp_path):
  from data_prep.kuairand import prepare_kuairand
  from stem_tfrs import ModelConfig, TrainConfig, training
  data = str(tmp_path / "kuairand_pure_slice")
  stats = prepare_kuairand(SLICE, data, min_count=5)
  assert sum(stats[s]["rows"] for s in ("train", "valid", "test")) == 228_329
  config = TrainConfig(data_dir=data, run_dir=str(tmp_path / "run"),
                       export_dir=str(tmp_path / "export"), epochs=1, batch_size=1024,
                       learning_rate=1e-3, seed=2023)
  training.train(ModelConfig(**STUDY_FLAGS), config, verbose=0)
  metrics = json.load(open(tmp_path / "run" / "metrics.json"))
  test = metrics["test"]
  assert sorted(test) == ["is_click", "is_like", "long_view"]
  for task, values in test.items():
    assert all(math.isfinite(v) for v in values.values()), (task, values)
  # One epoch learns the two dense tasks well past chance on the test day; the like task has
  # about 290 positives there, so only "better than chance" is asked of it.
  assert test["is_click"]["auc"] > 0.65 and test["long_view"]["auc"] > 0.65, test
  assert test["is_like"]["auc"] > 0.55, test
  assert os.listdir(tmp_path / "export"), "the trained model was not exported"
