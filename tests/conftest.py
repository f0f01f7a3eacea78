"""Shared fixtures: tiny prepared data sets and tiny models, built once per session."""

import os
import sys

# Keras 2 for tf.keras in every process (stem_tfrs sets it too, on import). TensorFlow
# itself is imported by the tests and fixtures, not here: pytest-xdist's controller
# loads this file and runs no test.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_MODEL_FLAGS = ["--embedding_dim=4", "--num_shared_experts=2", "--num_specific_experts=1",
                    "--expert_hidden_units=16", "--gate_hidden_units=8",
                    "--tower_hidden_units=8"]


def tiny_model_config(**overrides):
  """The model of TINY_MODEL_FLAGS, as a ModelConfig."""
  from stem_tfrs import ModelConfig
  values = dict(embedding_dim=4, num_shared_experts=2, num_specific_experts=1,
                expert_hidden_units=(16,), gate_hidden_units=(8,), tower_hidden_units=(8,))
  values.update(overrides)
  return ModelConfig(**values)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
  """A 20,000-row synthetic data set (train ~16,000 rows)."""
  from data_prep.synthetic import prepare_synthetic
  out = str(tmp_path_factory.mktemp("data") / "tiny")
  prepare_synthetic(out, rows=20_000, seed=7, min_count=1)
  return out


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
  """One tiny STEM-Net trained for 2 epochs and exported."""
  from stem_tfrs import TrainConfig, training
  root = tmp_path_factory.mktemp("run")
  config = TrainConfig(data_dir=tiny_data, run_dir=str(root / "run"),
                       export_dir=str(root / "export"), epochs=2, batch_size=256,
                       eval_batch_size=1024, learning_rate=3e-3, seed=3)
  return training.train(tiny_model_config(), config, verbose=0)
