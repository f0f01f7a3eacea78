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
shells over the `stem_tfrs` library. `pip install -e .` also installs the same
command line as `stem-tfrs <command> [--flags]`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

from stem_tfrs.cli import run  # noqa: E402

if __name__ == "__main__":
  run()
