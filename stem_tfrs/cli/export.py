"""`python main.py export --run_dir=RUN`: export a finished run's best checkpoint for TF Serving."""

from __future__ import annotations

from typing import List

from absl import flags

from stem_tfrs.serving import export
from stem_tfrs.cli.errors import one_line_errors
from stem_tfrs.config import ConfigError

flags.DEFINE_integer("version", None, "Integer version to export as, 1 to 2^63-1 (default: "
                     "seconds since the epoch, never reusing an existing version). --run_dir, "
                     "--export_dir and --export_precision are shared with `train`.")

FLAGS = flags.FLAGS


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  if not FLAGS.run_dir:
    raise ConfigError("--run_dir is required: the run directory written by `train`")
  if not FLAGS.export_dir:
    raise ConfigError("--export_dir must not be empty")
  if FLAGS.version is not None and not 1 <= FLAGS.version <= export.MAX_VERSION:
    raise ConfigError(f"--version={FLAGS.version}: must be an integer from 1 to "
                      f"{export.MAX_VERSION} (2^63-1; TF Serving reads versions as int64)")
  # Without the flag, the run's own --export_precision.
  precision = FLAGS.export_precision if FLAGS["export_precision"].present else None
  path = export.export_run(FLAGS.run_dir, FLAGS.export_dir, version=FLAGS.version,
                           precision=precision)
  print(f"SavedModel: {path}")
  return 0
