"""Time of one Adam update of an embedding table: Keras' Adam, stem_tfrs.FusedAdam, LazyAdam.

    python benchmarks/optimizer.py [--rows 2000000] [--width 48] [--ids 32768]
                                   [--steps 10] [--output FILE.json]

A [rows, width] table (width 48 = 16 dimensions x (2 tasks + shared), as the
fused table of a two-task STEM-Net) receives the gradient of a batch of
`--ids` Zipf-skewed row ids (an `IndexedSlices`, as from the model's gather),
and the optimizer applies it. Adam updates every row every step (its moments
decay everywhere), so its cost grows with the table, not the batch; LazyAdam
updates the looked-up rows only (`--optimizer=lazy_adam`), so its cost grows
with the batch. The optimizers alternate, a timed block of `--steps` updates
each, three times; the JSON holds every block (ms per update) and the
machine description.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402  (Keras 2 first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import describe, write_report  # noqa: E402  (benchmarks/)


def update_function(optimizer, rows: int, width: int, ids: np.ndarray):
  """A compiled step: gather the ids' rows, square-loss gradient, one optimizer update."""
  table = tf.Variable(tf.random.stateless_normal([rows, width], seed=[0, 0]) * 0.01)
  ids = tf.constant(ids)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(tf.gather(table, ids)))
    optimizer.apply_gradients([(tape.gradient(loss, table), table)])

  step()  # trace, create the slots
  return step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=2_000_000)
  parser.add_argument("--width", type=int, default=48)
  parser.add_argument("--ids", type=int, default=32_768, help="Ids per batch (with repeats).")
  parser.add_argument("--steps", type=int, default=10, help="Updates per timed block.")
  parser.add_argument("--output", default="benchmarks/results/optimizer.json")
  args = parser.parse_args()

  ids = (np.random.default_rng(0).zipf(1.3, args.ids) - 1) % args.rows
  steps = {"keras_adam": update_function(tf.keras.optimizers.Adam(1e-3), args.rows, args.width,
                                         ids),
           "fused_adam": update_function(stem_tfrs.FusedAdam(1e-3), args.rows, args.width,
                                         ids),
           "lazy_adam": update_function(stem_tfrs.LazyAdam(1e-3), args.rows, args.width, ids)}
  blocks = {name: [] for name in steps}
  for _ in range(3):
    for name, step in steps.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        step()
      blocks[name].append(round((time.perf_counter() - start) / args.steps * 1000, 2))
  report = {"rows": args.rows, "width": args.width, "ids": args.ids,
            "ms_per_update": blocks,
            "best_speedup": round(min(blocks["keras_adam"]) / min(blocks["fused_adam"]), 2),
            "lazy_best_speedup_over_fused": round(min(blocks["fused_adam"])
                                                  / min(blocks["lazy_adam"]), 1),
            "machine": describe()}
  write_report(args.output, report)
  for name, times in blocks.items():
    print(f"{name:<11} [{args.rows:,} x {args.width}] ms per update: "
          + ", ".join(f"{t:.1f}" for t in times))
  print(f"best over best: fused {report['best_speedup']}x Keras', lazy "
        f"{report['lazy_best_speedup_over_fused']}x fused -> {args.output}")


if __name__ == "__main__":
  main()
