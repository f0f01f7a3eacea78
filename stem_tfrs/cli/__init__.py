"""The `python main.py <command>` dispatcher; each command lives in its own module.

`run` is the whole command line: `python main.py` calls it, and so does the
`stem-tfrs` console script that pyproject.toml installs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Dict, List

from absl import app, flags
from absl import logging as absl_logging
import tensorflow as tf

from stem_tfrs.cli import benchmark, export, predict, prepare, server, train, tune

#: What `--help` prints first: absl prints __main__'s docstring, which `run` sets to this, so
#: that `python main.py` and the console script print the same.
USAGE = """Command line of stem_tfrs: `python main.py <command> [--flags]`.

Commands:
  train       Train a model (STEM-Net by default), evaluate it and export a SavedModel.
  benchmark   Train every model with every seed on the same data; write comparison reports.
  export      Export a finished run's best checkpoint as a versioned SavedModel for TF Serving.
  predict     Score a CSV of raw features with a SavedModel, or with a model on TF Serving.
  prepare     Turn a raw data set (TikTok, KuaiRand, QK-Video, MovieLens) into a prepared one.
  tune        Search the authors' hyper-parameters with KerasTuner; rerun to resume.
  server      Run a worker or parameter server of a parameter-server cluster (TF_CONFIG).

`python main.py --help` lists the commands' flags (`--helpfull` TensorFlow's and
absl's too); `--flagfile=FILE` reads flags from a file. The commands are thin
shells over the `stem_tfrs` library; `pip install -e .` installs the same command line
as `stem-tfrs <command> [--flags]`.
"""

COMMANDS: Dict[str, Callable[[List[str]], int]] = {
    "train": train.run,
    "benchmark": benchmark.run,
    "prepare": prepare.run,
    "export": export.run,
    "predict": predict.run,
    "server": server.run,
    "tune": tune.run,
}


def parse_flags(argv: List[str]) -> List[str]:
  """absl flag parsing with a one-line error (and exit status 2) on a bad flag."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}; see --helpfull", file=sys.stderr)
    sys.exit(2)


class _NotTensorFlowInfo(logging.Filter):
  """Drops the INFO records TensorFlow's own Python modules log through absl."""

  _package = os.path.dirname(tf.__file__) + os.sep

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.pathname.startswith(self._package)


def main(argv: List[str]) -> int:
  """absl entry point: argv[1] names the command; flags are already parsed."""
  # TensorFlow's and matplotlib's own INFO records (saver timings, font caches,
  # SavedModel fingerprints) are not news to a user; ours are.
  tf.get_logger().setLevel(logging.WARNING)
  absl_logging.get_absl_handler().addFilter(_NotTensorFlowInfo())
  logging.getLogger("matplotlib").setLevel(logging.WARNING)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    got = f"'{argv[1]}'" if len(argv) > 1 else "none"
    print(f"error: give a command, one of: {', '.join(COMMANDS)} (got {got}); "
          "e.g. python main.py train", file=sys.stderr)
    return 2
  if len(argv) > 2:
    print(f"error: unexpected arguments {argv[2:]}; flags start with --", file=sys.stderr)
    return 2
  return COMMANDS[argv[1]](argv[1:])


def run() -> None:
  """The command line: parses sys.argv, runs its command and exits with its status.

  `python main.py` and the `stem-tfrs` console script both call this.
  """
  sys.modules["__main__"].__doc__ = USAGE  # main.py, or the console script's wrapper
  for command in COMMANDS.values():  # --help lists the commands' flags
    flags.adopt_module_key_flags(sys.modules[command.__module__])
  app.run(main, flags_parser=parse_flags)
