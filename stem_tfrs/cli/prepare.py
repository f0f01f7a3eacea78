"""`python main.py prepare --dataset=NAME --raw=FILE --out=DIR`: raw logs -> prepared data set."""

from __future__ import annotations

import sys
from typing import List

from absl import flags

from data_prep import cli as data_prep_cli

flags.DEFINE_enum("dataset", None, sorted(data_prep_cli.loaders()),
                  "Raw data set layout to prepare (see data_prep/).")
data_prep_cli.define_flags(seed_flag=False)  # --seed is shared with train; see run()

FLAGS = flags.FLAGS


def run(argv: List[str]) -> int:
  del argv
  if FLAGS.dataset is None:
    print(f"error: --dataset is required, one of: {', '.join(sorted(data_prep_cli.loaders()))}",
          file=sys.stderr)
    return 2
  # `--seed` defaults to the training seed; a data set keeps its own split seed
  # unless the flag is given.
  return data_prep_cli.prepare_from_flags(FLAGS.dataset,
                                          FLAGS.seed if FLAGS["seed"].present else None)
