"""Helpers the tests share: the repository's root, the tiny model's flags and configuration.

Imported as `tests.support` (tests/ is a package; pytest puts the repository root on
sys.path for it). Fixtures live in tests/conftest.py.
"""

import os

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
