"""The fault drill's pieces: run a command whole, or SIGKILLed at a point, and read what it left.

Each test_faults_<command>.py runs one writing command three ways: whole; killed
at a point (tests/kill_point.py); and then again, whole, with the same flags.
The rerun must leave exactly what the uninterrupted run left, and nothing of the
killed run may remain: no half-written output, no temporary sibling.

Only the killed run needs a `main.py` process of its own (`run` with `kill_at`);
the whole runs go through the same command line in the test's process
(`run_whole`), which has TensorFlow imported already.
"""

import os
import re
import signal
import subprocess
import sys
from typing import Dict, Optional, Sequence

from tests.cli_cases import run_here
from tests.support import REPO

MAIN = os.path.join(REPO, "main.py")
KILL_POINT = os.path.join(REPO, "tests", "kill_point.py")
#: Names our commands give their temporary siblings (files.temp_prefix) and data_prep's
#: replaced data set while it is moved aside.
TEMPORARY = re.compile(r"\.tmp-|\.old-")


def run(args: Sequence[str], cwd, kill_at: Optional[str] = None, nth: int = 1):
  """`python main.py ARGS` in `cwd`, or the same SIGKILLed at the `nth` call of `kill_at`."""
  command = [sys.executable, MAIN, *args]
  if kill_at:
    command = [sys.executable, KILL_POINT, kill_at, str(nth), *command[1:]]
  return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def run_whole(args: Sequence[str], cwd):
  """`python main.py ARGS` in `cwd`, run to its end in this process (`cli_cases.run_here`):
  the same command line, flags and exit status, without a new process's TensorFlow import."""
  return run_here(*args, cwd=cwd)


def assert_succeeded(result) -> None:
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]


def assert_killed(result) -> None:
  """The run died of the drill's SIGKILL (not of an error, and not after finishing)."""
  assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-3000:])


def files(root, skip: Sequence[str] = ()) -> Dict[str, bytes]:
  """{path relative to `root`: content} of every file under `root`, but those matching `skip`."""
  found = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      relative = os.path.relpath(path, root)
      if not any(re.search(pattern, relative) for pattern in skip):
        with open(path, "rb") as f:
          found[relative] = f.read()
  return found


def temporaries(root) -> list:
  """Every file or directory under `root` named as a temporary sibling of ours."""
  return sorted(os.path.relpath(os.path.join(directory, name), root)
                for directory, subdirectories, names in os.walk(root)
                for name in subdirectories + names if TEMPORARY.search(name))
