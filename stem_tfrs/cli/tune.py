"""`python main.py tune`: KerasTuner search over the authors' hyper-parameters.

    python main.py tune --data_dir=data/tiktok --max_trials=20 --output_dir=tuning/stem
    python main.py train --flagfile=tuning/stem/best.flags

Every `train` flag sets the base configuration; the searched values
(`stem_tfrs.training.tuning.SEARCH_SPACE`) replace theirs in each trial. Writes
results.csv (one row per trial) and best.flags (the best trial's full `train`
configuration) into --output_dir; rerun the same command to resume. Needs the
`tune` extra (KerasTuner): without it, says so in one line and exits 1.
"""

from __future__ import annotations

import os
from typing import List

from absl import flags

from stem_tfrs.cli.errors import one_line_errors
from stem_tfrs.cli.train import configs_from_flags, ensure_embedded_data, flags_from_configs
from stem_tfrs.config import TUNE_OBJECTIVES, TUNERS
from stem_tfrs.extras import need

flags.DEFINE_integer("max_trials", 10, "Trials in the whole search (tune).")
flags.DEFINE_enum("objective", "auc", list(TUNE_OBJECTIVES),
                  "What tune maximizes: the tasks' mean validation AUC or gAUC.")
flags.DEFINE_enum("tuner", "random", list(TUNERS),
                  "KerasTuner oracle: random search or Bayesian optimization (tune).")

FLAGS = flags.FLAGS


def _quiet_failed_trials() -> None:
  """A failed trial prints our one-line warning, not KerasTuner's traceback.

  KerasTuner prints the traceback of every failed trial while its (private)
  DEBUG switch is on, which it is by default.
  """
  try:
    from keras_tuner.src import config as keras_tuner_config
  except ImportError:  # moved in another version: tracebacks it is
    return
  keras_tuner_config.DEBUG = False


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  # KerasTuner (the `tune` extra) is imported here, not with the CLI: every other command
  # would pay its import, and would need it installed.
  need("keras_tuner", "tune", "python main.py tune")
  from stem_tfrs.training import tuning  # pylint: disable=import-outside-toplevel
  model_config, train_config = configs_from_flags()
  output_dir = (FLAGS.output_dir if FLAGS["output_dir"].present
                else os.path.join("tuning", train_config.model))
  if not FLAGS["data_dir"].present:
    ensure_embedded_data(train_config.data_dir, FLAGS.synthetic_rows)
  _quiet_failed_trials()
  result = tuning.tune(model_config, train_config, output_dir, max_trials=FLAGS.max_trials,
                       objective=FLAGS.objective, tuner=FLAGS.tuner)
  best_flags = os.path.join(output_dir, "best.flags")
  with open(best_flags, "w") as f:
    f.write(f"# The best of {len(result.trials)} trials by validation {FLAGS.objective} "
            f"(python main.py tune); results in {result.results_csv}\n")
    f.write("\n".join(flags_from_configs(result.best_model_config,
                                         result.best_train_config)) + "\n")
  print(tuning.format_results(result.trials, FLAGS.objective))
  print(f"\nresults:     {result.results_csv}\nbest flags:  {best_flags}\n"
        f"train it:    python main.py train --flagfile={best_flags}")
  return 0
