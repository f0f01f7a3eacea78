"""Shared fixtures: tiny prepared data sets and tiny models, built once per session."""

import os

# Keras 2 for tf.keras in every process (stem_tfrs sets it too, on import). TensorFlow
# itself is imported by the tests and fixtures, not here: pytest-xdist's controller
# loads this file and runs no test.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tests.support import tiny_model_config  # noqa: E402


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
