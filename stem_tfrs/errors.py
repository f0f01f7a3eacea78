"""Every exception stem_tfrs and data_prep raise on purpose, and TensorFlow's runtime errors in one line.

The classes are the ones a caller catches: each derives from the built-in it
refines (a bad value is a `ValueError`, a refused request a `RuntimeError`),
so code that catches the built-in keeps working. The module imports nothing
from the package, so any module can import it. `first_line` cuts a TensorFlow
error to the line that says what went wrong, without the graph dump.
"""

from __future__ import annotations

import re


class ConfigError(ValueError):
  """A configuration value is out of range; the message names it as its flag (`--seed ...`)."""


class SchemaError(ValueError):
  """A schema, or the data it describes, is not usable; the message says why."""


class DataError(ValueError):
  """The raw data is unusable; the message says what and where."""


class BeamUnavailableError(ValueError):
  """`--runner` was given, but Apache Beam is not installed."""


class CheckpointError(ValueError):
  """A checkpoint cannot be read, or does not restore exactly a model's variables.

  The message, one line, names the checkpoint (its files, where it cannot be
  read) and says what to do.
  """


class TrainingDiverged(ValueError):
  """A loss became NaN or infinite: the run stops before evaluating or exporting."""


class RunFinished(ConfigError):
  """The run directory holds a finished run (metrics.json): `train` does not overwrite it."""

  def __init__(self, message: str, run_dir: str):
    super().__init__(message)
    self.run_dir = run_dir


class SearchFailed(ValueError):
  """A search ended without a trial to report, or stopped on failed trials."""


class ServingError(RuntimeError):
  """The server refused or failed a request; the message is the server's."""


class MissingExtraError(ImportError):
  """A command needs an optional part that is not installed; the message names the extra."""


class ServingConnectionError(ServingError):
  """No answer to a request: nothing listens at the address, or it speaks another protocol.

  Attributes:
    refused: Nothing listens there (the connection was refused).
    other_protocol: Something answered, but not in the client's protocol
      (a REST client at a gRPC port, or a gRPC client at an HTTP/1.1 port).
  """

  def __init__(self, message: str, refused: bool = False, other_protocol: bool = False):
    super().__init__(message)
    self.refused = refused
    self.other_protocol = other_protocol


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
