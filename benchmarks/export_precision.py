"""What a bfloat16 export costs in accuracy: a run's exports in each precision, scored alike.

    python benchmarks/export_precision.py --run_dir runs/stem-<date>-<time>
                                          [--output FILE.json]

Exports the run's best checkpoint once per precision of
`stem_tfrs.serving.export.EXPORT_PRECISIONS` into a temporary directory, loads each
SavedModel as TF Serving would, scores the valid and test splits through its
`serving_default` signature, and reports logloss, AUC and gAUC per split and
task, the change from float32, and how far the probabilities moved (largest
and mean absolute difference), as JSON and as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import stem_tfrs  # noqa: E402,F401  (Keras 2 first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import describe, write_report  # noqa: E402  (benchmarks/)
from stem_tfrs import evaluation, make_dataset  # noqa: E402
from stem_tfrs.serving.export import EXPORT_PRECISIONS, export_run  # noqa: E402
from stem_tfrs.data.schema import Schema  # noqa: E402

SPLITS = ("valid", "test")


def served_predictions(saved_model: str, schema: Schema,
                       batch_size: int) -> Dict[str, Dict[str, np.ndarray]]:
  """{split: `evaluation.predict`'s output}, the probabilities from the SavedModel's signature."""
  serve = tf.saved_model.load(saved_model).signatures["serving_default"]
  return {split: evaluation.predict_with(lambda features: serve(**features),
                                         make_dataset(schema, split, batch_size),
                                         schema.group_column)
          for split in SPLITS}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run_dir", required=True, help="A finished `python main.py train` run.")
  parser.add_argument("--batch_size", type=int, default=4096)
  parser.add_argument("--output", default="benchmarks/results/export_precision.json")
  args = parser.parse_args()
  with open(os.path.join(args.run_dir, "config.json")) as f:
    schema = Schema.load(os.path.dirname(json.load(f)["schema"]))
  report = {"run_dir": args.run_dir, "precisions": {}, "machine": describe()}
  predictions = {}
  with tempfile.TemporaryDirectory() as work:
    for precision in EXPORT_PRECISIONS:
      path = export_run(args.run_dir, work, precision=precision)
      predictions[precision] = served_predictions(path, schema, args.batch_size)
      report["precisions"][precision] = {
          split: evaluation.compute_metrics(predictions[precision][split], schema.tasks)
          for split in SPLITS}
  reference = EXPORT_PRECISIONS[0]
  for precision in EXPORT_PRECISIONS[1:]:
    for split in SPLITS:
      for task in schema.tasks:
        entry = report["precisions"][precision][split][task]
        base = report["precisions"][reference][split][task]
        moved = np.abs(predictions[precision][split][task] - predictions[reference][split][task])
        entry.update({f"{key}_change": entry[key] - base[key]
                      for key in ("logloss", "auc", "gauc")})
        entry.update(max_probability_change=float(moved.max()),
                     mean_probability_change=float(moved.mean()))
  write_report(args.output, report)
  print(f"{'precision':<10} {'split':<6} {'task':<12} {'logloss':>8} {'AUC':>7} {'gAUC':>7} "
        f"{'dAUC':>8} {'dgAUC':>8} {'max |dp|':>9}")
  for precision, splits in report["precisions"].items():
    for split, tasks in splits.items():
      for task, m in tasks.items():
        changes = (f"{m['auc_change']:>+8.4f} {m['gauc_change']:>+8.4f} "
                   f"{m['max_probability_change']:>9.4f}" if "auc_change" in m
                   else f"{'-':>8} {'-':>8} {'-':>9}")
        print(f"{precision:<10} {split:<6} {task:<12} {m['logloss']:>8.4f} {m['auc']:>7.4f} "
              f"{m['gauc']:>7.4f} {changes}")
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
