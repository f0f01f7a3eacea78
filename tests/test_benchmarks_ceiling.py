"""The speed benchmarks' FLOP model counts the dense products the built models hold."""

import importlib.util
import os

import numpy as np
import pytest

from conftest import REPO

# Loaded from its file: benchmarks/ on sys.path would shadow the data_prep package.
_spec = importlib.util.spec_from_file_location(
    "ceiling", os.path.join(REPO, "benchmarks", "ceiling.py"))
ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceiling)


@pytest.mark.parametrize("name", ["stem", "mmoe"])
@pytest.mark.parametrize("config_name", ["default", "reference"])
def test_flop_model_counts_every_dense_kernel_of_the_model(name, config_name, tmp_path):
  from data_prep.synthetic import prepare_synthetic
  from stem_tfrs import ModelConfig, build_model
  from stem_tfrs.schema import Schema
  prepare_synthetic(str(tmp_path / "data"), rows=2_000, min_count=1)
  schema = Schema.load(str(tmp_path / "data"))
  config = ModelConfig.reference() if config_name == "reference" else ModelConfig()
  model = build_model(name, schema, config)
  kernels = [v for v in model.trainable_variables if "kernel" in v.name]
  held = sum(int(np.prod(v.shape)) for v in kernels)  # multiply-adds per example, forward
  shape = (config, name, len(schema.features), len(schema.tasks))
  layers, experts = ceiling.dense_layers(*shape)
  assert sum(c * i * o for c, i, o in layers) == held
  mixing = len(schema.tasks) * 2 * experts * config.expert_hidden_units[-1]
  assert ceiling.forward_flops(*shape) == 2 * held + mixing
