"""`python main.py benchmark`: every model x every seed on the same data, with reports."""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Tuple

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
flags.DEFINE_string("model_flags_dir", None, "Per-model settings: model M's flags come from "
                    "DIR/M.flags (a flagfile of `train`, e.g. experiments/kuairand_pure), and "
                    "flags given on the command line override them for every model (data_dir, "
                    "epochs, seed, ...). With --models=all: every model with a flagfile there. "
                    "Default: every model gets the command line's flags.")
flags.DEFINE_string("reference_model", None, "The model compared with every other, with seed "
                    "and bootstrap intervals. Default: stem if compared, else the first.")
flags.DEFINE_integer("bootstrap_replicates", 1000, "Bootstrap replicates of the intervals "
                     "over test rows (0: seed intervals only).")

#: Flags of `train` that a benchmark sets itself or that do not change a run: refused in a
#: model's flagfile.
_NOT_PER_MODEL = ("run_dir", "verbose", "synthetic_rows")

FLAGS = flags.FLAGS


def _per_model_flags() -> List[str]:
  """The flags a model's flagfile may set: `train`'s model, data and training flags."""
  return [f.name for f in FLAGS.get_flags_for_module(train_cli.__name__)
          if f.name not in _NOT_PER_MODEL]


def _flagfile_values(path: str, model: str) -> Dict[str, str]:
  """{flag name: its value as text} from a model's flagfile; ConfigError names file and flag."""
  if not os.path.isfile(path):
    raise ConfigError(f"--model_flags_dir: no flagfile {path} for model {model}")
  allowed = set(_per_model_flags())
  values = {}
  for arg in FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=True):
    name, has_value, value = arg.lstrip("-").partition("=")
    if not has_value and name not in allowed and name.startswith("no") and name[2:] in allowed:
      name, value, has_value = name[2:], "false", "bool"
    if name not in allowed:
      raise ConfigError(f"{path}: {arg.split('=')[0]} is not a flag a benchmark takes per "
                        "model (a model, data or training flag of train)")
    if not has_value:
      if not FLAGS[name].boolean:
        raise ConfigError(f"{path}: --{name} needs a value")
      value = "true"
    values[name] = value
  if values.get("model", model) != model:
    raise ConfigError(f"{path}: --model={values['model']}, but the file is {model}'s")
  return values


def _model_settings(directory: str, models: Tuple[str, ...]) -> Dict[str, tuple]:
  """model -> (ModelConfig, TrainConfig): its flagfile under the command line's flags."""
  settings = {}
  for model in models:
    values = _flagfile_values(os.path.join(directory, f"{model}.flags"), model)
    saved = {name: (FLAGS[name].value, FLAGS[name].present) for name in values}
    try:
      for name, value in values.items():
        if not FLAGS[name].present:  # the command line wins
          FLAGS[name].parse(value)
      settings[model] = train_cli.configs_from_flags()
    except (flags.Error, ValueError) as e:
      raise ConfigError(f"{os.path.join(directory, model + '.flags')}: {e}") from None
    finally:
      for name, (value, present) in saved.items():
        FLAGS[name].value, FLAGS[name].present = value, present
  return settings


def _models(models: List[str], model_flags_dir: Optional[str]) -> Tuple[str, ...]:
  """--models, where "all" is every model, or with `model_flags_dir` every model with a file."""
  if models != ["all"]:
    return tuple(models)
  if model_flags_dir is None:
    return MODEL_NAMES
  found = tuple(m for m in MODEL_NAMES
                if os.path.isfile(os.path.join(model_flags_dir, f"{m}.flags")))
  if not found:
    raise ConfigError(f"--model_flags_dir={model_flags_dir} holds no <model>.flags "
                      f"file (models: {', '.join(MODEL_NAMES)})")
  return found


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  models = _models(FLAGS.models, FLAGS.model_flags_dir)
  tasks = FLAGS.comparable_tasks
  if tasks is not None and len(tasks) != 2:
    raise ConfigError(f"--comparable_tasks takes two tasks, got {tasks}")
  bench = comparison.BenchmarkConfig(models=models, seeds=FLAGS.seeds,
                                    output_dir=FLAGS.output_dir, kappa=FLAGS.kappa,
                                    comparable_tasks=tuple(tasks) if tasks else None,
                                    reference=FLAGS.reference_model,
                                    replicates=FLAGS.bootstrap_replicates)
  model_config, train_config = train_cli.configs_from_flags()
  settings = None
  if FLAGS.model_flags_dir is not None:
    settings = _model_settings(FLAGS.model_flags_dir, models)
  elif not FLAGS["data_dir"].present:
    train_cli.ensure_embedded_data(train_config.data_dir, FLAGS.synthetic_rows)
  report = comparison.run_benchmark(model_config, train_config, bench, verbose=FLAGS.verbose,
                                    settings=settings)
  print(comparison.markdown(report.results, report.failed, compared=report.intervals))
  print(f"reports in {FLAGS.output_dir}/: {', '.join(report.files)}")
  if report.failed:
    print(f"error: {len(report.failed)} run(s) diverged and are left out of the reports "
          f"(failed.json in each run directory; delete a run directory to train it again): "
          + ", ".join(f"{f['model']} seed {f['seed']}" for f in report.failed), file=sys.stderr)
    return 1
  return 0
