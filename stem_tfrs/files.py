"""Files written whole or not at all: temporary siblings named after their owner, renamed when done.

Every command that writes (prepare, train, export, predict) writes into a
temporary sibling of its destination and renames it into place once complete.
A sibling's name says which process owns it (`<prefix><host>-<pid>-...`), so a
later run can tell one abandoned by a killed process of this machine (removed
by `remove_abandoned`) from one that another live run is still writing (kept).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import List

import tensorflow as tf

_HOST = socket.gethostname()


def temp_prefix(prefix: str) -> str:
  """`prefix` followed by this machine's name and this process's id, and a dash.

  Callers add what makes the name unique within the process (mkdtemp's
  random part, a version); `remove_abandoned(directory, prefix)` finds it.
  """
  return f"{prefix}{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def remove_abandoned(directory: str, prefix: str) -> List[str]:
  """Removes `directory`'s temporary siblings named by `temp_prefix(prefix)` whose process died.

  Only names of this machine are considered, and only those whose process no
  longer runs are removed: another live run's sibling (or another machine's,
  on a shared file system) is left alone. Remote file systems (gs://, ...)
  are left alone too. Returns the removed paths.
  """
  if "://" in directory or not os.path.isdir(directory):
    return []
  ours = f"{prefix}{_HOST}-"
  removed = []
  for name in os.listdir(directory):
    if not name.startswith(ours):
      continue
    pid = name[len(ours):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
      continue
    path = os.path.join(directory, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      try:
        os.remove(path)
      except OSError:
        continue
    removed.append(path)
  return removed


def write_json(path: str, content) -> None:
  """Writes `content` as JSON to `path` (local or remote) through a temporary sibling.

  The sibling is renamed over `path` once complete, so a reader (another
  worker, a resumed run, a crash in between) never sees half a file; one
  left by a killed process is removed by the next write of `path`.
  """
  prefix = f"{os.path.basename(path)}.tmp-"
  remove_abandoned(os.path.dirname(path) or ".", prefix)
  tmp = os.path.join(os.path.dirname(path), temp_prefix(prefix) + "json")
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(content, indent=2) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)
