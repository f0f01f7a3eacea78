"""`python main.py export --run_dir=RUN`: export a finished run's best checkpoint for TF Serving."""

from __future__ import annotations

from typing import List

from absl import flags

from stem_tfrs import export
from stem_tfrs.cli.errors import one_line_errors
from stem_tfrs.config import ConfigError

flags.DEFINE_integer("version", None, "Integer version to export as (default: seconds since "
                     "the epoch, never reusing an existing version). --run_dir and "
                     "--export_dir are shared with `train`.")
flags.DEFINE_enum("export_precision", "float32", list(export.EXPORT_PRECISIONS),
                  "What the exported weights are stored and multiplied in: bfloat16 halves "
                  "the model's memory and the bytes a request reads; probabilities stay float32.")

FLAGS = flags.FLAGS


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  if not FLAGS.run_dir:
    raise ConfigError("--run_dir is required: the run directory written by `train`")
  if not FLAGS.export_dir:
    raise ConfigError("--export_dir must not be empty")
  path = export.export_run(FLAGS.run_dir, FLAGS.export_dir, version=FLAGS.version,
                           precision=FLAGS.export_precision)
  print(f"SavedModel: {path}")
  return 0
