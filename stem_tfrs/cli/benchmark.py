"""`python main.py benchmark`: every model x every seed on the same data, with reports."""

from __future__ import annotations

import sys
from typing import List

from absl import flags

from stem_tfrs.training import comparison
from stem_tfrs.cli import train as train_cli
from stem_tfrs.cli.errors import one_line_errors
from stem_tfrs.config import ConfigError
from stem_tfrs.models import MODEL_NAMES

flags.DEFINE_list("models", ["all"], "Models to compare, comma-separated, or 'all' "
                  f"({','.join(MODEL_NAMES)}). The data, model and training flags of "
                  "`train` apply to every one of them.")
flags.DEFINE_integer("seeds", 3, "Seeds per model: --seed, --seed+1, ...")
flags.DEFINE_string("output_dir", "benchmark", "Directory of the runs and reports of "
                    "benchmark and tune (tune's default: tuning/<model>); re-invoking with "
                    "the same flags reuses finished runs.")
flags.DEFINE_float("kappa", 2.0, "Comparable-sample threshold: a user's feedback ratio "
                   "between the two tasks within [1/kappa, kappa] is comparable.")
flags.DEFINE_list("comparable_tasks", None, "The two tasks A,B of the comparable-sample "
                  "analysis. Default: the data's first two tasks.")

FLAGS = flags.FLAGS


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  models = tuple(MODEL_NAMES if FLAGS.models == ["all"] else FLAGS.models)
  tasks = FLAGS.comparable_tasks
  if tasks is not None and len(tasks) != 2:
    raise ConfigError(f"--comparable_tasks takes two tasks, got {tasks}")
  bench = comparison.BenchmarkConfig(models=models, seeds=FLAGS.seeds,
                                    output_dir=FLAGS.output_dir, kappa=FLAGS.kappa,
                                    comparable_tasks=tuple(tasks) if tasks else None)
  model_config, train_config = train_cli.configs_from_flags()
  if not FLAGS["data_dir"].present:
    train_cli.ensure_embedded_data(train_config.data_dir, FLAGS.synthetic_rows)
  report = comparison.run_benchmark(model_config, train_config, bench, verbose=FLAGS.verbose)
  print(comparison.markdown(report.results, report.failed))
  print(f"reports in {FLAGS.output_dir}/: {', '.join(report.files)}")
  if report.failed:
    print(f"error: {len(report.failed)} run(s) diverged and are left out of the reports "
          f"(failed.json in each run directory; delete a run directory to train it again): "
          + ", ".join(f"{f['model']} seed {f['seed']}" for f in report.failed), file=sys.stderr)
    return 1
  return 0
