"""Where a training step's time goes: the compute threads' time per op type, from a profile.

    python benchmarks/step_profile.py [--model stem] [--config authors|default] [--steps 5]
                                      [--output FILE.json]

Trains the model on one batch repeated from memory (the step alone, as the
"excluded" pipeline of train_throughput.py), warms up, then records `--steps`
steps with the TensorFlow profiler and adds up, per op type, the time
TensorFlow's compute threads spent running it. Op types fall into four
groups: `matmul` (the dense layers' products, forward and backward),
`optimizer` (the variable updates), `embedding` (id lookups, gathers and
their gradients) and `other` (everything else: the elementwise passes over
activations and gradients, such as the gates' mixing, ReLU and bias
gradients, and the sums of gradients). Reports milliseconds of thread time
per step and each group's share, and the GFLOP/s the products ran at per busy
thread: a step is as fast as its products only if `other` is small.

The profile comes from `tf.profiler.experimental` (an XSpace protobuf, read
with the proto module TensorFlow ships); timing under the profiler is a
little slower than without it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402

from ceiling import dense_layers  # noqa: E402  (benchmarks/)
from data_prep.synthetic import prepare_synthetic  # noqa: E402
from machine import describe, write_report  # noqa: E402
from stem_tfrs import ModelConfig, build_model, make_dataset  # noqa: E402
from stem_tfrs.training.optimizers import FusedAdam  # noqa: E402
from stem_tfrs.data.schema import Schema  # noqa: E402

_EMBEDDING_OPS = ("Gather", "ResourceGather", "GatherV2", "UnsortedSegmentSum", "Unique",
                  "LookupTableFindV2", "SparseSegmentSum", "SparseSegmentMean")


def op_group(op_type: str) -> str:
  """"matmul", "optimizer", "embedding" or "other" for a TensorFlow op type."""
  if "MatMul" in op_type:  # MatMul, _MklMatMul, _FusedMatMul, _MklNativeFusedMatMul, Batch...
    return "matmul"
  if op_type.startswith(("ResourceApply", "ApplyAdam", "ResourceSparseApply")):
    return "optimizer"
  if op_type in _EMBEDDING_OPS:
    return "embedding"
  return "other"


def op_thread_seconds(logdir: str) -> tuple:
  """({op type: seconds of compute-thread time}, compute threads seen) of a profile.

  Sums the op events ("<node name>:<op type>") on TensorFlow's inter-op
  compute threads ("tf_Compute/..."); the executor's own events around them
  ("ExecutorState::Process", "ParallelFor", ...) are left out, so nothing is
  counted twice.
  """
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # shipped with TensorFlow
  paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise RuntimeError(f"the profiler wrote no *.xplane.pb under {logdir}")
  space = xplane_pb2.XSpace()
  with open(paths[0], "rb") as f:
    space.ParseFromString(f.read())
  seconds, threads = collections.Counter(), set()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue
      threads.add(line.name)
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if ":" in name and "::" not in name:
          seconds[name.rsplit(":", 1)[1]] += event.duration_ps / 1e12
  return seconds, len(threads)


def profile_step(model_name: str, schema: Schema, config: ModelConfig, batch: int,
                 steps: int, logdir: str) -> dict:
  """The profile of `steps` training steps, grouped and per op type (see the module doc)."""
  tf.keras.utils.set_random_seed(0)
  model = build_model(model_name, schema, config)
  model.compile(optimizer=FusedAdam(1e-3))
  data = make_dataset(schema, "train", batch, shuffle=True, seed=0, drop_remainder=True)
  data = tf.data.Dataset.from_tensors(next(iter(data))).repeat()
  model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # trace and warm up
  start = time.perf_counter()
  model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
  unprofiled = batch * steps / (time.perf_counter() - start)
  tf.profiler.experimental.start(logdir)
  start = time.perf_counter()
  model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
  wall = (time.perf_counter() - start) / steps
  tf.profiler.experimental.stop()
  seconds, threads = op_thread_seconds(logdir)
  per_step = {op: s / steps for op, s in seconds.items()}
  total = sum(per_step.values())
  groups = collections.Counter()
  for op, s in per_step.items():
    groups[op_group(op)] += s
  shape = (config, model_name, len(schema.features), len(schema.tasks))
  matmul_flops = 3 * batch * sum(2.0 * c * i * o for c, i, o in dense_layers(*shape)[0])
  return {
      "model": model_name, "batch": batch, "steps": steps,
      "examples_per_second_unprofiled": round(unprofiled),
      "examples_per_second_profiled": round(batch / wall),
      "compute_threads": threads,
      "busy_fraction": round(total / (wall * max(threads, 1)), 3),
      "thread_ms_per_step": round(total * 1e3, 1),
      "groups_ms_per_step": {g: round(s * 1e3, 1) for g, s in groups.most_common()},
      "groups_share": {g: round(s / total, 3) for g, s in groups.most_common()},
      "matmul_gflops_per_busy_thread": (round(matmul_flops / groups["matmul"] / 1e9, 1)
                                        if groups["matmul"] else None),
      "ops_ms_per_step": {op: round(s * 1e3, 2)
                          for op, s in sorted(per_step.items(), key=lambda kv: -kv[1])},
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="stem")
  parser.add_argument("--config", default="authors", choices=["authors", "default"])
  parser.add_argument("--batch", type=int, default=0,
                      help="Batch size (0: 4096 for the authors' configuration, 1024 otherwise).")
  parser.add_argument("--steps", type=int, default=5, help="Profiled training steps.")
  parser.add_argument("--rows", type=int, default=50_000, help="Synthetic rows to prepare.")
  parser.add_argument("--output", default="benchmarks/results/step_profile.json")
  args = parser.parse_args()
  authors = args.config == "authors"
  config = ModelConfig.reference() if authors else ModelConfig()
  batch = args.batch or (4096 if authors else 1024)
  with tempfile.TemporaryDirectory() as work:
    prepare_synthetic(os.path.join(work, "data"), rows=args.rows)
    schema = Schema.load(os.path.join(work, "data"))
    result = profile_step(args.model, schema, config, batch, args.steps,
                          os.path.join(work, "profile"))
  report = {"machine": describe(), "config": args.config, **result}
  write_report(args.output, report)
  print(f"{args.model}, {args.config} configuration, batch {batch}: "
        f"{result['examples_per_second_unprofiled']:,} examples/s "
        f"({result['examples_per_second_profiled']:,} profiled), "
        f"{result['compute_threads']} compute threads {result['busy_fraction']:.0%} busy")
  print(f"{'group':<10} {'ms/step':>9} {'share':>7}")
  for group, ms in result["groups_ms_per_step"].items():
    print(f"{group:<10} {ms:>9.1f} {result['groups_share'][group]:>7.1%}")
  print(f"products: {result['matmul_gflops_per_busy_thread']} GFLOP/s per busy thread")
  print("top op types (thread ms per step): " + ", ".join(
      f"{op} {ms:.1f}" for op, ms in list(result["ops_ms_per_step"].items())[:10]))
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
