"""The speed benchmarks' FLOP model counts the dense products the built models hold."""

import importlib.util
import os

import numpy as np
import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier
_spec = importlib.util.spec_from_file_location(
    "ceiling", os.path.join(REPO, "benchmarks", "ceiling.py"))
ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceiling)


@pytest.mark.parametrize("name", ["stem", "mmoe"])
@pytest.mark.parametrize("config_name", ["default", "reference", "stacked"])
def test_flop_model_counts_every_dense_kernel_of_the_model(name, config_name, tmp_path):
  from data_prep.synthetic import prepare_synthetic
  from stem_tfrs import ModelConfig, build_model
  from stem_tfrs.data.schema import Schema
  prepare_synthetic(str(tmp_path / "data"), rows=2_000, min_count=1)
  schema = Schema.load(str(tmp_path / "data"))
  config = {"default": ModelConfig(), "reference": ModelConfig.reference(),
            "stacked": ModelConfig(num_layers=3)}[config_name]
  model = build_model(name, schema, config)
  kernels = [v for v in model.trainable_variables if "kernel" in v.name]
  held = sum(int(np.prod(v.shape)) for v in kernels)  # multiply-adds per example, forward
  shape = (config, name, len(schema.features), len(schema.tasks))
  layers, experts, gates = ceiling.dense_layers(*shape)
  assert sum(c * i * o for c, i, o in layers) == held
  # every gate's softmax layer has one unit per expert it mixes
  softmax_layers = [v for v in kernels if "/gate_" in v.name and "/output/" in v.name]
  assert len(softmax_layers) == gates and all(v.shape[-1] == experts for v in softmax_layers)
  mixing = gates * 2 * experts * config.expert_hidden_units[-1]
  assert ceiling.forward_flops(*shape) == 2 * held + mixing


def test_net_seconds_subtracts_the_calls_own_overhead():
  import time
  import tensorflow as tf

  def call(pause):
    return tf.function(lambda: tf.py_function(lambda: time.sleep(pause) or 1.0, [], tf.float32))

  assert 0.009 <= ceiling.net_seconds(call(0.01), call(0.0), seconds=0.2) < 0.2
  # two calls alike: the difference is noise, and the floor, a tenth of the call, holds
  assert 0.0001 <= ceiling.net_seconds(call(0.002), call(0.002), seconds=0.1) < 0.002


def test_forward_ceiling_reads_in_each_precision_and_refuses_models_it_cannot_count():
  import tensorflow as tf
  from stem_tfrs import ModelConfig
  config = ModelConfig(expert_hidden_units=[16], gate_hidden_units=[8],
                       tower_hidden_units=[8], embedding_dim=4)
  for dtype in (tf.float32, tf.bfloat16):
    assert ceiling.forward_ceiling(config, "stem", 3, 2, batch=4, dtype=dtype,
                                   seconds=0.05) > 0
  with pytest.raises(ValueError, match="no FLOP count"):
    ceiling.forward_ceiling(config, "ple", 3, 2, batch=4)
