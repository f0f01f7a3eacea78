"""Writing the JSON files a run leaves behind, whole or not at all."""

from __future__ import annotations

import json
import os

import tensorflow as tf


def write_json(path: str, content) -> None:
  """Writes `content` as JSON to `path` (local or remote) through a temporary sibling.

  The sibling is renamed over `path` once complete, so a reader (another
  worker, a resumed run, a crash in between) never sees half a file.
  """
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(content, indent=2) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)
