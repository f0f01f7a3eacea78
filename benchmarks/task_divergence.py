"""What each model does on the embedded data as users' tasks drift apart (`task_divergence`).

    python benchmarks/task_divergence.py [--divergences 0,0.5,1] [--rows 400000]
                                         [--models stem,me_mmoe,mmoe,shared_bottom,single_task]
                                         [--seeds 2] [--work DIR] [--output FILE.json]

The generator's knob `task_divergence` (`data_prep/synthetic.py`) scales how far
each user's tasks drift apart: at 0 a user's `finish` and `like` share one taste and
one bias, at 1 (the embedded data) users range from agreeing to disagreeing. Data sets
that differ only in the knob hold the same users, items and impressions. For each
value the script prepares the data and runs the model comparison
(`stem_tfrs.training.comparison`) with the defaults of `python main.py train`: every
model, every seed, test AUC per task, and STEM-Net against each baseline with its seed
and bootstrap intervals, overall and on the comparable / task-dominant samples. The
generator is not tuned for any model to win: the knob moves one thing, and the JSON
reports whatever follows. Runs are kept under `--work`, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402  (Keras 2 first)
from absl import logging  # noqa: E402

from data_prep.synthetic import prepare_synthetic  # noqa: E402
from stem_tfrs.config import ModelConfig, TrainConfig  # noqa: E402
from stem_tfrs.training import comparison  # noqa: E402

from machine import describe, write_report  # noqa: E402  (benchmarks/)

#: The fields --model_flags may set; everything else is `python main.py train`'s default.
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def run_one(divergence: float, args, work: str, model_config: ModelConfig) -> dict:
  """Prepares the data at `divergence` (once) and compares the models on it."""
  data_dir = os.path.join(work, f"data-{divergence:g}")
  if not os.path.exists(os.path.join(data_dir, "schema.json")):
    prepare_synthetic(data_dir, rows=args.rows, seed=args.data_seed,
                      task_divergence=divergence)
  train_config = TrainConfig(data_dir=data_dir, epochs=args.epochs)
  bench = comparison.BenchmarkConfig(models=tuple(args.models), seeds=args.seeds,
                                     output_dir=os.path.join(work, f"bench-{divergence:g}"),
                                     replicates=args.replicates)
  comparison.run_benchmark(model_config, train_config, bench)
  with open(os.path.join(bench.output_dir, "results.json")) as f:
    report = json.load(f)  # the benchmark's own records (NaN as null)
  kept = ("model", "task", "seeds", "auc_mean", "auc_std", "gauc_mean", "gauc_std")
  return {
      "task_divergence": divergence,
      "results": [{k: r[k] for k in kept} for r in report["results"]],
      "intervals": [r for r in report["intervals"] if r["metric"] == "auc"],
      "failed": report["failed"],
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--divergences", default="0,0.5,1",
                      help="Comma-separated values of task_divergence, each in [0, 1].")
  parser.add_argument("--rows", type=int, default=400_000, help="Rows of each data set.")
  parser.add_argument("--data_seed", type=int, default=2023, help="Seed of the generator.")
  parser.add_argument("--models", default="stem,me_mmoe,mmoe,shared_bottom,single_task")
  parser.add_argument("--seeds", type=int, default=2, help="Seeds per model (2023, 2024, ...).")
  parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
  parser.add_argument("--replicates", type=int, default=1000, help="Bootstrap replicates.")
  parser.add_argument("--model_flags", default="",
                      help="Space-separated name=value ModelConfig overrides, a tuple's values "
                           "comma-separated (tests shrink the model with it).")
  parser.add_argument("--work", default=None,
                      help="Directory for the data and runs (kept; a rerun resumes). "
                           "Default: a temporary directory.")
  parser.add_argument("--output", default="benchmarks/results/task_divergence.json")
  args = parser.parse_args()
  try:
    divergences = [float(d) for d in args.divergences.split(",")]
  except ValueError:
    parser.error(f"--divergences: not comma-separated numbers: {args.divergences!r}")
  for d in divergences:
    if not 0.0 <= d <= 1.0:  # before anything is prepared or trained
      parser.error(f"--divergences: task_divergence must be in [0, 1], got {d}")
  args.models = [m for m in args.models.split(",") if m]
  overrides = {}
  for item in args.model_flags.split():
    name, _, value = item.partition("=")
    if name not in _MODEL_FIELDS:
      parser.error(f"--model_flags: {name!r} is not a ModelConfig field")
    default = getattr(ModelConfig(), name)
    overrides[name] = (tuple(int(v) for v in value.split(",")) if isinstance(default, tuple)
                       else type(default)(value))
  model_config = dataclasses.replace(ModelConfig(), **overrides)
  logging.set_verbosity(logging.WARNING)

  with tempfile.TemporaryDirectory() as scratch:
    work = args.work or scratch
    points = [run_one(d, args, work, model_config) for d in divergences]
  write_report(args.output, {
      "machine": describe(),
      "divergences": divergences, "rows": args.rows, "data_seed": args.data_seed,
      "models": args.models, "seeds": args.seeds, "epochs": args.epochs,
      "replicates": args.replicates, "model_flags": args.model_flags,
      "points": points,
  })
  for point in points:
    print(f"task_divergence {point['task_divergence']:g}:")
    for row in point["results"]:
      print(f"  {row['model']:>14} {row['task']:>8} test AUC {row['auc_mean']:.4f}")
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
