"""How every command reports a user's mistake: one line on stderr, exit status 1."""

from __future__ import annotations

import functools
import sys
from typing import Callable, List

import tensorflow as tf

from stem_tfrs.config import ConfigError
from stem_tfrs.errors import MissingExtraError, first_line
from stem_tfrs.data.schema import SchemaError
from stem_tfrs.serving.clients import ServingError

#: Errors that describe bad input (flags, files, data, a refused request) or a
#: missing optional part (the extra to install), not a bug: no traceback.
USER_ERRORS = (ConfigError, SchemaError, ServingError, MissingExtraError, ValueError, OSError)


def one_line_errors(command: Callable[[List[str]], int]) -> Callable[[List[str]], int]:
  """Wraps a command so that bad input ends it with `error: ...` and status 1."""

  @functools.wraps(command)
  def run(argv: List[str]) -> int:
    try:
      return command(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
    except tf.errors.OpError as e:
      print(f"error: {first_line(e.message)}", file=sys.stderr)
    return 1

  return run
