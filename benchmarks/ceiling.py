"""The matmul ceiling of a machine, and of a model's own matrix products.

The figures the speed benchmarks compare against: GFLOP/s of plain products,
the FLOP count of a STEM or MMoE configuration, and the examples/s a step
would reach if it did nothing but the model's matrix products. A `config` is
anything with ModelConfig's attributes (a `stem_tfrs.ModelConfig`, or the
`model_config` of an export's config.json in a SimpleNamespace).
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
  overhead, about 0.2 ms on a 2-core VM, does not count as product time; at
  batch 1 it would otherwise halve the ceiling. (The median is floored at a
  tenth of the median call, against noise.)
  """
  reps = min(64, max(8, 2**24 // (m * k * n)))
  lefts = [tf.cast(tf.random.normal([m, k]), dtype) for _ in range(reps)]
  right = tf.cast(tf.random.normal([k, n]), dtype)

  @tf.function
  def products():
    return tf.add_n([tf.cast(tf.matmul(a, right)[0, 0], tf.float32) for a in lefts])

  @tf.function
  def overhead():  # the same call, its products left out
    return tf.add_n([tf.cast(a[0, 0], tf.float32) for a in lefts])

  products().numpy()
  overhead().numpy()
  calls, differences, start = [], [], time.perf_counter()
  while len(differences) < 4 or time.perf_counter() - start < seconds:
    pair = [products, overhead] if len(differences) % 2 == 0 else [overhead, products]
    times = {}
    for function in pair:
      t = time.perf_counter()
      function().numpy()
      times[function] = time.perf_counter() - t
    calls.append(times[products])
    differences.append(times[products] - times[overhead])
  return max(float(np.median(differences)), 0.1 * float(np.median(calls))) / reps


def gflops(m: int, k: int, n: int, dtype=tf.float32) -> float:
  return 2.0 * m * k * n / matmul_seconds(m, k, n, dtype) / 1e9


def dense_layers(config, model: str, num_fields: int, num_tasks: int):
  """(count, fan_in, fan_out) of every dense layer of one STEM or MMoE layer + towers."""
  x = num_fields * config.embedding_dim
  if model == "stem":
    experts = num_tasks * config.num_specific_experts + config.num_shared_experts
  elif model == "mmoe":
    experts = config.num_shared_experts
  else:
    raise ValueError(f"no FLOP count for {model}")
  layers = []

  def mlp(count, fan_in, units):
    for u in units:
      layers.append((count, fan_in, u))
      fan_in = u

  mlp(experts, x, list(config.expert_hidden_units))
  mlp(num_tasks, x, list(config.gate_hidden_units) + [experts])  # STEM's reads x_t + x_S
  mlp(num_tasks, config.expert_hidden_units[-1], list(config.tower_hidden_units) + [1])
  return layers, experts


def forward_flops(config, model: str, num_fields: int, num_tasks: int) -> float:
  """Multiply-adds x 2 of the dense layers and the gate mixing, one example, forward."""
  layers, experts = dense_layers(config, model, num_fields, num_tasks)
  mixing = num_tasks * 2.0 * experts * config.expert_hidden_units[-1]
  return sum(2.0 * c * i * o for c, i, o in layers) + mixing


def gemm_ceiling(config, model: str, num_fields: int, num_tasks: int,
                 batch: int, dtype=tf.float32, training: bool = True) -> float:
  """Examples/s of a step that did nothing but its own matrix products.

  Every dense layer costs one product forward ([B, in] x [in, out]) and, in a
  training step, two more backward (input gradient [B, out] x [out, in],
  weight gradient [in, B] x [B, out]), each timed alone at its own shape: the
  step cannot beat this however its other work is arranged.
  """
  seconds = 0.0
  for count, fan_in, fan_out in dense_layers(config, model, num_fields, num_tasks)[0]:
    shapes = [(batch, fan_in, fan_out)]
    if training:
      shapes += [(batch, fan_out, fan_in), (fan_in, batch, fan_out)]
    for m, k, n in shapes:
      seconds += count * matmul_seconds(m, k, n, dtype, seconds=0.3)
  return batch / seconds
