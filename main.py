"""Command line of stem_tfrs: `python main.py <command> [--flags]`.

The same command line as the `stem-tfrs` console script: both call
`stem_tfrs.cli.run`, whose USAGE (`python main.py --help`) lists the commands.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

from stem_tfrs.cli import run  # noqa: E402

if __name__ == "__main__":
  run()
