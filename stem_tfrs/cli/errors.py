"""How every command reports a user's mistake: one line on stderr, exit status 1."""

from __future__ import annotations

import functools
import re
import sys
from typing import Callable, List

import tensorflow as tf

from stem_tfrs.config import ConfigError
from stem_tfrs.schema import SchemaError
from stem_tfrs.serving.clients import ServingError

#: Errors that describe bad input (flags, files, data, a refused request), not a
#: bug: no traceback.
USER_ERRORS = (ConfigError, SchemaError, ServingError, ValueError, OSError)


#: Lines of a TensorFlow error that say where, not what: headers and traceback lines.
_WHERE = re.compile(r"(Graph execution error:|Exception encountered when calling layer|"
                    r"Detected at node|File \"|Call arguments received|\u2022|"
                    r"The error could be from a previous operation)")


def first_line(message: str) -> str:
  """The useful part of a TensorFlow runtime error, on one line (no graph dump).

  An assertion's message and values; a collective's cause (a peer that died,
  or disagrees on a shape) with the peer it names; else the first line that
  is not a header or a traceback line.
  """
  failed = re.search(r"assertion failed: \[(.*?)\] \[(.*?)\]", message)
  if failed:
    return f"{failed.group(1)} {failed.group(2)}"
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  aborted = next((line for line in lines if "aborted by:" in line), None)
  if aborted:
    cause = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", aborted)
    cause = re.sub(r"\s*\[Op:\w+\]$", "", cause)
    peer = re.search(r"remote target (\S+)", message)
    return cause + (f" (from {peer.group(1)})" if peer else "")
  useful = [line for line in lines if not _WHERE.match(line)]
  return (useful or lines or [message])[0]


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
