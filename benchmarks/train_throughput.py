"""Training throughput against the machine's own matmul ceiling.

    python benchmarks/train_throughput.py [--models stem,mmoe] [--configs authors_4096,default_1024]
                                          [--steps 20] [--output FILE.json]

Measures in one run:
  (a) the matmul ceiling: GFLOP/s of large square fp32 and bf16 products, and
      of the model's own GEMM shapes at the benchmark batch size;
  (b) training examples/s of each model at the authors' configuration (batch
      4096) and at the embedded default configuration, with the tf.data
      pipeline over the shards included, and excluded (one parsed batch
      repeated from memory), in float32, and in mixed_bfloat16 (pipeline
      included); the pipeline reads the TFRecord shards ("records") or serves
      the split from memory ("in_memory"); and the pipeline's own examples/s;
  (c) the FLOP count per example (forward and training step), counted from the
      dense layers of the configuration (embedding gathers are not FLOPs);
and writes examples/s, achieved GFLOP/s and three fractions: of the fp32 peak
(the large square product), taken as the highest of its readings in the run
(at the start, and after every training measurement: on a shared machine
one reading can be a third below another); of the reading taken right after
the best timed epoch (a pair seconds apart, so a slow phase lowers both);
and of the "GEMM-only" step, the examples/s a step would reach if it did
nothing but its own matrix products, each timed alone at its own shape (see
`gemm_ceiling`), read right after each measurement in the precision its
products ran in (bfloat16 for mixed_bfloat16). Right after each fp32 run with
an input pipeline, that pipeline alone is timed too, and its ratio to the step
reported. Training FLOPs are counted as 3x forward (forward, then the two
backward products of every dense layer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402

from data_prep.synthetic import prepare_synthetic  # noqa: E402
from ceiling import forward_flops, gemm_ceiling, gflops  # noqa: E402  (benchmarks/)
from machine import describe, write_report  # noqa: E402
from stem_tfrs import ModelConfig, build_model, make_dataset  # noqa: E402
from stem_tfrs.models import global_dtype_policy  # noqa: E402
from stem_tfrs.training.optimizers import FusedAdam  # noqa: E402
from stem_tfrs.data.schema import Schema  # noqa: E402


def train_examples_per_second(model, dataset, batch_size: int, steps: int,
                              peak_seconds: float = 1.0, peak_size: int = 2048) -> tuple:
  """(examples/s of the best timed epoch, fp32 peak GFLOP/s measured right after that epoch).

  Epoch 1 traces the step and is not timed; after each later epoch the
  square-product peak is measured again, so that a slow phase of a shared
  machine lowers both figures of a pair instead of only the model's.
  """
  epochs = []

  class Timer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      seconds = time.perf_counter() - self.start
      if epoch > 0:
        epochs.append((batch_size * steps / seconds,
                       gflops(peak_size, peak_size, peak_size, tf.float32,
                              seconds=peak_seconds)))

  model.fit(dataset, epochs=3, steps_per_epoch=steps, callbacks=[Timer()], verbose=0)
  return max(epochs)


def pipeline_examples_per_second(schema: Schema, batch: int, in_memory: bool,
                                 seconds: float = 3.0) -> float:
  """Steady-state examples/s of the shuffled training pipeline alone (after warm-up)."""
  batches = iter(make_dataset(schema, "train", batch, shuffle=True, seed=0,
                              in_memory=in_memory).repeat())
  for _ in range(40):  # past the shuffle buffer's first fill
    next(batches)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    features, _ = next(batches)
    n += int(features[schema.group_column].shape[0])
  return n / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="stem,mmoe")
  parser.add_argument("--configs", default="authors_4096,default_1024",
                      help="Of authors_4096 (the authors' configuration, batch 4096), "
                           "default_1024 (the default one, batch 1024) and tiny_256 (a tiny "
                           "model at batch 256: what the benchmark's own test runs).")
  parser.add_argument("--steps", type=int, default=20, help="Training steps per timed epoch.")
  parser.add_argument("--rows", type=int, default=200_000, help="Synthetic rows to read.")
  parser.add_argument("--output", default="benchmarks/results/train_throughput.json")
  parser.add_argument("--timing_seconds", type=float, default=1.0,
                      help="Least seconds each ceiling reading is timed for (the products of a "
                           "configuration get 0.3 of it, the input pipeline 3x); a smoke test "
                           "passes a small value.")
  parser.add_argument("--peak_size", type=int, default=2048,
                      help="n of the n x n x n products that read the peak GFLOP/s (large "
                           "enough that the CPU runs at its most; a smoke test passes a small "
                           "one).")
  args = parser.parse_args()
  timing, n = args.timing_seconds, args.peak_size
  configs = {"authors_4096": (ModelConfig.reference(), 4096),
             "default_1024": (ModelConfig(), 1024),
             "tiny_256": (ModelConfig(embedding_dim=4, num_shared_experts=2, num_specific_experts=1,
                                      expert_hidden_units=(16,), gate_hidden_units=(8,),
                                      tower_hidden_units=(8,)), 256)}
  unknown = set(args.configs.split(",")) - set(configs)
  if unknown:
    parser.error(f"unknown --configs {sorted(unknown)}; choose from {sorted(configs)}")
  configs = {label: configs[label] for label in args.configs.split(",")}
  unknown = set(args.models.split(",")) - {"stem", "mmoe"}
  if unknown:
    parser.error(f"unknown --models {sorted(unknown)}; choose from mmoe, stem (the "
                 "architectures with a FLOP count)")

  report = {"machine": describe()}
  ceiling = {f"fp32_square_{n}": gflops(n, n, n, tf.float32, seconds=timing),
             f"bf16_square_{n}": gflops(n, n, n, tf.bfloat16, seconds=timing),
             "fp32_4096x128x512": gflops(4096, 128, 512, tf.float32, seconds=timing),
             "fp32_4096x512x512": gflops(4096, 512, 512, tf.float32, seconds=timing),
             "fp32_512x4096x512": gflops(512, 4096, 512, tf.float32, seconds=timing)}
  report["ceiling_gflops"] = {k: round(v, 1) for k, v in ceiling.items()}
  peaks = [ceiling[f"fp32_square_{n}"]]  # every fp32 peak reading of the run

  with tempfile.TemporaryDirectory() as work:
    prepare_synthetic(os.path.join(work, "data"), rows=args.rows)
    schema = Schema.load(os.path.join(work, "data"))
    runs = []
    for name in args.models.split(","):
      for label, (config, batch) in configs.items():
        shape = (config, name, len(schema.features), len(schema.tasks))
        forward = forward_flops(*shape)
        for pipeline, policy in (("records", "float32"), ("in_memory", "float32"),
                                 ("excluded", "float32"), ("records", "mixed_bfloat16")):
          tf.keras.backend.clear_session()
          tf.keras.utils.set_random_seed(0)
          with global_dtype_policy(policy):
            model = build_model(name, schema, config)
            model.compile(optimizer=FusedAdam(1e-3))
            data = make_dataset(schema, "train", batch, shuffle=True, seed=0,
                                drop_remainder=True, in_memory=pipeline == "in_memory").repeat()
            if pipeline == "excluded":
              data = tf.data.Dataset.from_tensors(next(iter(data))).repeat()
            rate, peak_after = train_examples_per_second(model, data, batch, args.steps,
                                                         peak_seconds=timing, peak_size=n)
          peaks.append(peak_after)
          # read again after every measurement: one reading per configuration could
          # fall in a slow phase and flatter every run of it
          gemm_dtype = tf.bfloat16 if policy == "mixed_bfloat16" else tf.float32
          gemm_only = gemm_ceiling(*shape, batch, dtype=gemm_dtype, seconds=0.3 * timing)
          achieved = 3 * forward * rate / 1e9
          run = {"model": name, "config": label, "batch": batch, "pipeline": pipeline,
                 "policy": policy,
                 "examples_per_second": round(rate),
                 "forward_mflop_per_example": round(forward / 1e6, 6),
                 "train_mflop_per_example": round(3 * forward / 1e6, 6),
                 "achieved_gflops": round(achieved, 3),
                 "fp32_peak_after_gflops": round(peak_after, 1),
                 "fraction_of_fp32_peak_after": round(achieved / peak_after, 3),
                 "gemm_only_examples_per_second": round(gemm_only),
                 "gemm_only_dtype": gemm_dtype.name,
                 "fraction_of_gemm_only": round(rate / gemm_only, 3)}
          if pipeline != "excluded" and policy == "float32":  # the input alone, right after
            alone = pipeline_examples_per_second(schema, batch, pipeline == "in_memory",
                                                 seconds=3 * timing)
            run["pipeline_only_examples_per_second"] = round(alone)
            run["pipeline_over_step"] = round(alone / rate, 1)
          runs.append(run)
          print(json.dumps(run))
  peak = max(peaks)
  report["fp32_peak_readings_gflops"] = [round(p, 1) for p in peaks]
  report["fp32_peak_max_gflops"] = round(peak, 1)
  for run in runs:
    run["fraction_of_fp32_peak_max"] = round(run["achieved_gflops"] / peak, 3)
  report["runs"] = runs
  write_report(args.output, report)
  print(f"ceiling GFLOP/s at the start: {report['ceiling_gflops']}")
  print(f"fp32 peak readings, GFLOP/s: {report['fp32_peak_readings_gflops']} "
        f"(max {report['fp32_peak_max_gflops']})")
  print(f"{'model':<6} {'config':<13} {'pipeline':<9} {'policy':<15} {'ex/s':>8} {'GFLOP/s':>8} "
        f"{'of peak max':>11} {'of peak after':>13} {'of GEMM-only':>12} {'tf.data/step':>12}")
  for r in runs:
    ratio = f"{r['pipeline_over_step']:.1f}x" if "pipeline_over_step" in r else "-"
    print(f"{r['model']:<6} {r['config']:<13} {r['pipeline']:<9} {r['policy']:<15} "
          f"{r['examples_per_second']:>8,} {r['achieved_gflops']:>8.1f} "
          f"{r['fraction_of_fp32_peak_max']:>11.1%} {r['fraction_of_fp32_peak_after']:>13.1%} "
          f"{r['fraction_of_gemm_only']:>12.1%} {ratio:>12}")
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
