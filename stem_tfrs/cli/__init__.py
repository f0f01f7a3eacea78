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
  for command in COMMANDS.values():  # --help lists the commands' flags
    flags.adopt_module_key_flags(sys.modules[command.__module__])
  app.run(main, flags_parser=parse_flags)
