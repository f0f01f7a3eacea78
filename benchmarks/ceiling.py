"""The matmul ceiling of a machine, and of a model's own matrix products.

The figures the speed benchmarks compare against: GFLOP/s of plain products,
the FLOP count of a STEM or MMoE configuration, and the examples/s a training
step or a forward pass would reach if it did nothing but the model's matrix
products. A `config` is anything with ModelConfig's attributes (a
`stem_tfrs.ModelConfig`, or the `model_config` of an export's config.json in
a SimpleNamespace).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf


def matmul_seconds(m: int, k: int, n: int, dtype=tf.float32, seconds: float = 1.0) -> float:
  """Seconds of one [m, k] x [k, n] product, timed over distinct operands.

  Each call runs R products with R different left operands (R = 8, and up
  to 64 for small products), so common-subexpression elimination cannot
  flatter the figure. The same call without its products is timed in
  alternation (which of the two goes first alternates too) and its time
  subtracted: the median of the pairs' differences, so the call's own
  overhead does not count as product time; at batch 1 it would otherwise
  be a large share of the ceiling. (The median is floored at a
  tenth of the median call, against noise.)
  """
  reps = min(64, max(8, 2**24 // (m * k * n)))
  # Variables, as a model holds its weights: a small eager tensor would be captured as a
  # constant, and a product of two constants folded away before it runs.
  lefts = [tf.Variable(tf.cast(tf.random.normal([m, k]), dtype)) for _ in range(reps)]
  right = tf.Variable(tf.cast(tf.random.normal([k, n]), dtype))

  @tf.function
  def products():
    return tf.add_n([tf.cast(tf.matmul(a, right)[0, 0], tf.float32) for a in lefts])

  @tf.function
  def overhead():  # the same call, its products left out
    return tf.add_n([tf.cast(a[0, 0], tf.float32) for a in lefts])

  return net_seconds(products, overhead, seconds) / reps


def net_seconds(work, overhead, seconds: float) -> float:
  """Seconds of `work()` beyond those of `overhead()` (the same call without the work).

  The two are timed in alternation, which goes first alternating too, for at
  least `seconds` and 4 pairs; the median of the pairs' differences, floored
  at a tenth of the median `work()` call against noise.
  """
  work().numpy()
  overhead().numpy()
  calls, differences, start = [], [], time.perf_counter()
  while len(differences) < 4 or time.perf_counter() - start < seconds:
    work_first = len(differences) % 2 == 0
    times = []
    for function in ((work, overhead) if work_first else (overhead, work)):
      t = time.perf_counter()
      function().numpy()
      times.append(time.perf_counter() - t)
    work_seconds, overhead_seconds = times if work_first else times[::-1]
    calls.append(work_seconds)
    differences.append(work_seconds - overhead_seconds)
  return max(float(np.median(differences)), 0.1 * float(np.median(calls)))


def gflops(m: int, k: int, n: int, dtype=tf.float32, seconds: float = 1.0) -> float:
  return 2.0 * m * k * n / matmul_seconds(m, k, n, dtype, seconds) / 1e9


def dense_layers(config, model: str, num_fields: int, num_tasks: int):
  """(layers, experts, gates) of a STEM-Net or MMoE configuration.

  `layers`: (count, fan_in, fan_out) of every dense layer, experts, gates and
  towers, in every stacked STEM layer; `experts`: the experts each gate
  mixes; `gates`: how many gates mix them (STEM: T per layer, and a shared
  one in every layer but the last).
  """
  x = num_fields * config.embedding_dim
  width = config.expert_hidden_units[-1]
  if model == "stem":
    experts = num_tasks * config.num_specific_experts + config.num_shared_experts
    num_layers = config.num_layers
  elif model == "mmoe":
    experts, num_layers = config.num_shared_experts, 1  # MMoE has one layer
  else:
    raise ValueError(f"no FLOP count for {model}")
  layers, gates = [], 0

  def mlp(count, fan_in, units):
    for u in units:
      layers.append((count, fan_in, u))
      fan_in = u

  for i in range(num_layers):
    fan_in = x if i == 0 else width
    layer_gates = num_tasks + (1 if model == "stem" and i < num_layers - 1 else 0)
    mlp(experts, fan_in, list(config.expert_hidden_units))
    mlp(layer_gates, fan_in, list(config.gate_hidden_units) + [experts])  # STEM's: x_t + x_S
    gates += layer_gates
  mlp(num_tasks, width, list(config.tower_hidden_units) + [1])
  return layers, experts, gates


def forward_flops(config, model: str, num_fields: int, num_tasks: int) -> float:
  """Multiply-adds x 2 of the dense layers and the gate mixing, one example, forward."""
  layers, experts, gates = dense_layers(config, model, num_fields, num_tasks)
  mixing = gates * 2.0 * experts * config.expert_hidden_units[-1]
  return sum(2.0 * c * i * o for c, i, o in layers) + mixing


def gemm_ceiling(config, model: str, num_fields: int, num_tasks: int,
                 batch: int, dtype=tf.float32, seconds: float = 0.3) -> float:
  """Examples/s of a training step that did nothing but its own matrix products.

  Every dense layer costs one product forward ([B, in] x [in, out]) and two
  backward (input gradient [B, out] x [out, in], weight gradient
  [in, B] x [B, out]), each timed alone at its own shape (`matmul_seconds`):
  the step cannot beat this however its other work is arranged. (At a
  training batch the products' arithmetic, not their weights' bytes, bounds
  them; for a forward pass at any batch see `forward_ceiling`.)
  """
  total = 0.0
  for count, fan_in, fan_out in dense_layers(config, model, num_fields, num_tasks)[0]:
    for m, k, n in [(batch, fan_in, fan_out), (batch, fan_out, fan_in), (fan_in, batch, fan_out)]:
      total += count * matmul_seconds(m, k, n, dtype, seconds=seconds)
  return batch / total


def forward_ceiling(config, model: str, num_fields: int, num_tasks: int,
                    batch: int, dtype=tf.float32, seconds: float = 0.3) -> float:
  """Examples/s of a forward pass that did nothing but its own matrix products.

  One call runs the product of every dense layer ([B, in] x [in, out]), each
  on weights of its own as in the model, so the call reads as many weight
  bytes as the model's forward pass: at small batches these come from memory, not
  from cache, and bound the call as they bound the model's; at large ones the
  products' arithmetic does. Two simplifications can only make the ceiling
  higher: the products are independent of each other (in the model a layer
  waits for the one before), and all products of one input width read the
  same [B, in] input (in the model each expert reads its own activations).
  The same call without its products is subtracted (`net_seconds`).
  """
  layers = dense_layers(config, model, num_fields, num_tasks)[0]
  # Variables, as in the model (see matmul_seconds).
  kernels = [tf.Variable(tf.cast(tf.random.normal([fan_in, fan_out]) * 0.05, dtype))
             for count, fan_in, fan_out in layers for _ in range(count)]
  inputs = {fan_in: tf.Variable(tf.cast(tf.random.normal([batch, fan_in]), dtype))
            for _, fan_in, _ in layers}

  @tf.function
  def products():
    return tf.add_n([tf.cast(tf.matmul(inputs[int(kernel.shape[0])], kernel)[0, 0], tf.float32)
                     for kernel in kernels])

  @tf.function
  def overhead():  # the same call, its products left out
    return tf.add_n([tf.cast(kernel[0, 0], tf.float32) for kernel in kernels])

  return batch / net_seconds(products, overhead, seconds)
