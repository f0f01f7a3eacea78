"""Command line of stem_tfrs: `python main.py <command> [--flags]`.

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
shells over the `stem_tfrs` library.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

from absl import app, flags  # noqa: E402

from stem_tfrs.cli import COMMANDS, main, parse_flags  # noqa: E402

if __name__ == "__main__":
  for command in COMMANDS.values():  # --help lists the commands' flags
    flags.adopt_module_key_flags(sys.modules[command.__module__])
  app.run(main, flags_parser=parse_flags)
