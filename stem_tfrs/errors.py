"""TensorFlow's runtime errors in one line: what went wrong, without the graph dump."""

from __future__ import annotations

import re

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
