"""`ModelConfig.initialization`: Keras' initializers by default, or the authors' FuxiCTR ones."""

import itertools
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import build_model, make_dataset
from stem_tfrs.config import ConfigError, ModelConfig
from stem_tfrs.layers import MLP, AITAttention, CGCLayer, ExpertGroup, MMoELayer, STEMLayer
from stem_tfrs.layers.initializers import initializers
from stem_tfrs.models import MODEL_NAMES
from stem_tfrs.data.schema import Schema

from tests.cli_cases import run_here
from tests.support import tiny_model_config
from tests.test_main import assert_clean_error


def weights_by_kind(model):
  """(embedding tables, dense kernels, biases) of `model`, as {name: array}."""
  tables, kernels, biases = {}, {}, {}
  for w in model.weights:
    name = w.name
    if "/embedding/" in name:
      tables[name] = w.numpy()
    elif "/kernel" in name:
      kernels[name] = w.numpy()
    elif "/bias" in name:
      biases[name] = w.numpy()
  return tables, kernels, biases


def xavier_std(kernel: np.ndarray) -> float:
  """sqrt(2 / (fan_in + fan_out)) of one Dense layer, or of one expert of a [K, in, out] stack."""
  fan_in, fan_out = kernel.shape[-2:]
  return math.sqrt(2.0 / (fan_in + fan_out))


def build_stem(tiny_data, **overrides):
  tf.keras.utils.set_random_seed(5)
  config = tiny_model_config(embedding_dim=16, num_layers=2, expert_hidden_units=(64, 32),
                             gate_hidden_units=(16,), tower_hidden_units=(16,), **overrides)
  return build_model("stem", Schema.load(tiny_data), config)


def test_fuxictr_starts_embeddings_at_normal_1e_4_and_kernels_xavier_normal(tiny_data):
  tables, kernels, biases = weights_by_kind(build_stem(tiny_data, initialization="fuxictr"))
  assert tables and biases
  for name, table in tables.items():
    assert abs(table.std() / 1e-4 - 1) < 0.05, (name, table.std())
    assert abs(table.mean()) < 5e-4 / math.sqrt(table.size), (name, table.mean())
    assert np.abs(table).max() > 2.5e-4, name  # a normal's tail: not truncated at 2 std

  assert any(k.ndim == 3 for k in kernels.values())  # the stacked experts'
  assert any(k.ndim == 2 and "gate" in n for n, k in kernels.items())
  assert any(k.ndim == 2 and "tower" in n for n, k in kernels.items())
  standardized = []
  for name, kernel in kernels.items():
    ratio = kernel.std() / xavier_std(kernel)
    assert abs(ratio - 1) < 5 / math.sqrt(2 * kernel.size) + 0.02, (name, ratio)
    standardized.append((kernel / xavier_std(kernel)).ravel())
  standardized = np.concatenate(standardized)
  assert abs(standardized.std() - 1) < 0.03
  # Beyond 2 std: 4.6% of a normal; none of a Glorot-uniform (max 1.73 std) or truncated one.
  assert 0.03 < np.mean(np.abs(standardized) > 2) < 0.065
  large = max(kernels.values(), key=np.size)
  assert np.abs(large).max() > 2 * xavier_std(large)

  for name, bias in biases.items():
    np.testing.assert_array_equal(bias, 0.0, err_msg=name)


def test_every_weight_starts_apart_from_the_others(tiny_data):
  """One initializer instance per weight: no two kernels, nor two experts of a stack, are equal."""
  _, kernels, _ = weights_by_kind(build_stem(tiny_data, initialization="fuxictr"))
  slices = [(f"{n}[{k}]", e) for n, kernel in kernels.items() if kernel.ndim == 3
            for k, e in enumerate(kernel)]
  slices += [(n, k) for n, k in kernels.items() if k.ndim == 2]
  for (a, x), (b, y) in itertools.combinations(slices, 2):
    if x.shape == y.shape:
      assert not np.array_equal(x, y), (a, b)


def test_keras_is_the_default_and_keeps_glorot_uniform_per_expert(tiny_data):
  default = build_stem(tiny_data)
  named = build_stem(tiny_data, initialization="keras")
  assert ModelConfig().initialization == "keras"
  assert [w.name for w in default.weights] == [w.name for w in named.weights]
  for a, b in zip(default.weights, named.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)

  tables, kernels, _ = weights_by_kind(default)
  for name, table in tables.items():  # truncated_normal: stddev 0.05, cut at 2 std
    assert np.abs(table).max() <= 0.1 and abs(table.std() / 0.05 - 0.88) < 0.05, name
  for name, kernel in kernels.items():  # Glorot uniform of one expert's own shape
    limit = math.sqrt(3) * xavier_std(kernel)
    assert np.abs(kernel).max() <= limit, name
    if kernel.size >= 1000:
      assert np.abs(kernel).max() > 0.95 * limit, name


@pytest.fixture(scope="module")
def batch(tiny_data):
  return next(iter(make_dataset(Schema.load(tiny_data), "train", 256)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_a_step_from_the_fuxictr_initialization(name, tiny_data, batch):
  tf.keras.utils.set_random_seed(0)
  model = build_model(name, Schema.load(tiny_data), tiny_model_config(initialization="fuxictr"))
  tables, kernels, biases = weights_by_kind(model)
  assert tables and kernels and biases
  for table in tables.values():
    assert 0.5e-4 < table.std() < 2e-4
  for bias in biases.values():
    np.testing.assert_array_equal(bias, 0.0)
  # Eagerly: tracing the step would take most of the test's time.
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), run_eagerly=True)
  before = [w.numpy() for w in model.trainable_weights]
  logs = model.train_on_batch(*batch, return_dict=True)
  assert math.isfinite(logs["loss"])
  assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_an_unknown_initialization_is_refused():
  with pytest.raises(ConfigError, match=r"unknown initialization 'bogus'; choose one of: "
                                        r"keras, fuxictr"):
    ModelConfig(initialization="bogus")
  with pytest.raises(ValueError, match="unknown initialization 'bogus'"):
    initializers("bogus")


def test_an_unknown_initialization_flag_is_one_line(tmp_path):
  result = run_here("train", "--initialization=bogus", cwd=tmp_path)
  assert_clean_error(result, r"--initialization=bogus: value should be one of <keras\|fuxictr>")
  assert not list(tmp_path.iterdir())


def test_the_flag_round_trips_through_a_flagfile():
  from stem_tfrs.cli.train import flags_from_configs
  from stem_tfrs.config import TrainConfig
  lines = flags_from_configs(ModelConfig(initialization="fuxictr"), TrainConfig())
  assert "--initialization=fuxictr" in lines


XAVIER_NORMAL = tf.keras.initializers.VarianceScaling(
    scale=1.0, mode="fan_avg", distribution="untruncated_normal", seed=3)


@pytest.mark.parametrize("make", [
    lambda init: MLP([4], output_units=2, kernel_initializer=init),
    lambda init: ExpertGroup(3, [4, 2], kernel_initializer=init),
    lambda init: AITAttention(4, kernel_initializer=init),
    lambda init: STEMLayer(["a", "b"], 1, 1, [4], [2], kernel_initializer=init),
    lambda init: CGCLayer(["a", "b"], 1, 1, [4], [2], kernel_initializer=init),
    lambda init: MMoELayer(["a", "b"], 2, [4], [2], kernel_initializer=init),
], ids=["MLP", "ExpertGroup", "AITAttention", "STEMLayer", "CGCLayer", "MMoELayer"])
def test_a_layer_with_another_initializer_round_trips_through_its_config(make):
  layer = make(XAVIER_NORMAL)
  config = layer.get_config()
  json.dumps(config)  # serializable as it is
  restored = type(layer).from_config(config)
  assert restored.get_config() == config
  assert isinstance(restored.kernel_initializer, tf.keras.initializers.VarianceScaling)
  assert restored.kernel_initializer.get_config() == XAVIER_NORMAL.get_config()
  assert make("glorot_uniform").get_config()["kernel_initializer"] != config["kernel_initializer"]


def test_the_stacked_experts_scale_a_variance_scaling_initializer_by_k():
  layer = ExpertGroup(8, [256], kernel_initializer=XAVIER_NORMAL)
  layer.build([None, 256])
  kernel = layer.kernels[0].numpy()                                   # [8, 256, 256]
  assert abs(kernel.std() / math.sqrt(2 / 512) - 1) < 0.01
  # Any other initializer is the same for the stack as for one expert.
  constant = ExpertGroup(2, [3], kernel_initializer=tf.keras.initializers.Constant(0.5))
  constant.build([None, 4])
  np.testing.assert_array_equal(constant.kernels[0].numpy(), 0.5)
