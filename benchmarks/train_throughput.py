"""Training throughput against the machine's own matmul ceiling.

    python benchmarks/train_throughput.py [--models stem,mmoe] [--steps 30] [--output FILE.json]

Measures in one run:
  (a) the matmul ceiling: GFLOP/s of large square fp32 and bf16 products, and
      of the model's own GEMM shapes at the benchmark batch size;
  (b) training examples/s of each model at the authors' configuration (batch
      4096) and at the embedded default configuration, with the tf.data
      pipeline over the shards included, and excluded (one parsed batch
      repeated from memory), in float32, and in mixed_bfloat16 (pipeline
      included);
  (c) the FLOP count per example (forward and training step), counted from the
      dense layers of the configuration (embedding gathers are not FLOPs);
and writes examples/s, achieved GFLOP/s and the fraction of the fp32 ceiling.
Training FLOPs are counted as 3x forward (forward, then the two backward
products of every dense layer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402

from data_prep.synthetic import prepare_synthetic  # noqa: E402
from stem_tfrs import ModelConfig, build_model, make_dataset  # noqa: E402
from stem_tfrs.schema import Schema  # noqa: E402


def matmul_gflops(m: int, k: int, n: int, dtype, seconds: float = 2.0) -> float:
  a = tf.random.normal([m, k], dtype=tf.float32)
  b = tf.random.normal([k, n], dtype=tf.float32)
  a, b = tf.cast(a, dtype), tf.cast(b, dtype)
  product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
  product()
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    product().numpy()
    calls += 1
  return 2.0 * m * k * n * calls / (time.perf_counter() - start) / 1e9


def dense_flops(units_in: int, units: list) -> float:
  flops, width = 0.0, units_in
  for u in units:
    flops += 2.0 * width * u
    width = u
  return flops


def forward_flops(config: ModelConfig, model: str, num_fields: int, num_tasks: int) -> float:
  """Multiply-adds x 2 of the dense layers of one example's forward pass (one layer)."""
  x = num_fields * config.embedding_dim
  h = config.expert_hidden_units[-1]
  tower = num_tasks * dense_flops(h, list(config.tower_hidden_units) + [1])
  if model == "stem":
    experts = num_tasks * config.num_specific_experts + config.num_shared_experts
    gates = num_tasks * dense_flops(x, list(config.gate_hidden_units) + [experts])
    mixing = num_tasks * 2.0 * experts * h
  elif model == "mmoe":
    experts = config.num_shared_experts
    gates = num_tasks * dense_flops(x, list(config.gate_hidden_units) + [experts])
    mixing = num_tasks * 2.0 * experts * h
  else:
    raise ValueError(f"no FLOP count for {model}")
  return experts * dense_flops(x, list(config.expert_hidden_units)) + gates + mixing + tower


def train_examples_per_second(model, dataset, batch_size: int, steps: int) -> float:
  times = []

  class Timer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      times.append(time.perf_counter() - self.start)

  model.fit(dataset, epochs=3, steps_per_epoch=steps, callbacks=[Timer()], verbose=0)
  return batch_size * steps / min(times[1:])  # epoch 1 traces the step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="stem,mmoe")
  parser.add_argument("--steps", type=int, default=30, help="Training steps per timed epoch.")
  parser.add_argument("--rows", type=int, default=200_000, help="Synthetic rows to read.")
  parser.add_argument("--output", default="benchmarks/train_throughput.json")
  args = parser.parse_args()

  report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "tensorflow": tf.__version__, "threads": {
                            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}}}
  ceiling = {"fp32_square_2048": matmul_gflops(2048, 2048, 2048, tf.float32),
             "bf16_square_2048": matmul_gflops(2048, 2048, 2048, tf.bfloat16)}
  reference = ModelConfig.reference()
  ceiling["fp32_model_4096x128x512"] = matmul_gflops(4096, 128, 512, tf.float32)
  ceiling["fp32_model_4096x512x512"] = matmul_gflops(4096, 512, 512, tf.float32)
  report["ceiling_gflops"] = {k: round(v, 1) for k, v in ceiling.items()}
  peak = ceiling["fp32_square_2048"]

  with tempfile.TemporaryDirectory() as work:
    prepare_synthetic(os.path.join(work, "data"), rows=args.rows)
    schema = Schema.load(os.path.join(work, "data"))
    configs = {"authors_4096": (reference, 4096), "default_1024": (ModelConfig(), 1024)}
    runs = []
    for name in args.models.split(","):
      for label, (config, batch) in configs.items():
        forward = forward_flops(config, name, len(schema.features), len(schema.tasks))
        for pipeline, policy in (("included", "float32"), ("excluded", "float32"),
                                 ("included", "mixed_bfloat16")):
          tf.keras.backend.clear_session()
          tf.keras.utils.set_random_seed(0)
          tf.keras.mixed_precision.set_global_policy(policy)
          model = build_model(name, schema, config)
          model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
          data = make_dataset(schema, "train", batch, shuffle=True, seed=0,
                              drop_remainder=True).repeat()
          if pipeline == "excluded":
            data = tf.data.Dataset.from_tensors(next(iter(data))).repeat()
          rate = train_examples_per_second(model, data, batch, args.steps)
          tf.keras.mixed_precision.set_global_policy("float32")
          runs.append({"model": name, "config": label, "batch": batch, "pipeline": pipeline,
                       "policy": policy,
                       "examples_per_second": round(rate),
                       "forward_mflop_per_example": round(forward / 1e6, 2),
                       "train_mflop_per_example": round(3 * forward / 1e6, 2),
                       "achieved_gflops": round(3 * forward * rate / 1e9, 1),
                       "fraction_of_fp32_ceiling": round(3 * forward * rate / 1e9 / peak, 3)})
          print(json.dumps(runs[-1]))
      pipeline_only = make_dataset(schema, "train", 4096, shuffle=True, seed=0).repeat()
      start, n = time.perf_counter(), 0
      for features, _ in pipeline_only.take(20):
        n += int(features[schema.group_column].shape[0])
      report["pipeline_only_examples_per_second"] = round(n / (time.perf_counter() - start))
  report["runs"] = runs
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(report, f, indent=2)
  print(f"ceiling GFLOP/s: {report['ceiling_gflops']}")
  print(f"tf.data alone: {report['pipeline_only_examples_per_second']:,} examples/s")
  print(f"{'model':<6} {'config':<13} {'pipeline':<9} {'policy':<15} {'ex/s':>8} {'GFLOP/s':>8} "
        f"{'of fp32 ceiling':>15}")
  for r in runs:
    print(f"{r['model']:<6} {r['config']:<13} {r['pipeline']:<9} {r['policy']:<15} "
          f"{r['examples_per_second']:>8,} "
          f"{r['achieved_gflops']:>8.1f} {r['fraction_of_fp32_ceiling']:>15.1%}")
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
