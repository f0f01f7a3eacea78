"""Runs many `main.py` command lines in one process, as `main.py` runs each: the bad-input corpus's
driver (TensorFlow is imported once, not once a case).

    python tests/cli_cases.py CASES.json RESULTS.json

CASES.json: [{"id": ..., "argv": [...], "cwd": DIR, "env": {...}}]. For each case the
driver resets every flag, parses the case's argv as `main.py` does and runs the
command with file descriptors 1 and 2 sent to files, so that whatever the process
would print (ours, absl's, TensorFlow's C++ logs) is captured. An exception that
escapes the command is what `main.py` would show as a traceback: it is printed
into the captured stderr as one. Each result also lists what changed under the
case's `cwd` (files written, removed or rewritten), which must be nothing.
RESULTS.json: [{"id", "code", "stdout", "stderr", "changed"}].
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from stem_tfrs.cli import COMMANDS, main, parse_flags  # noqa: E402


def snapshot(root: str) -> dict:
  """{path: (size, mtime_ns)} of every file under `root`, {path: None} of every directory."""
  found = {}
  for directory, subdirectories, names in os.walk(root):
    subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
    for name in subdirectories + names:
      path = os.path.join(directory, name)
      stat = os.lstat(path)
      found[os.path.relpath(path, root)] = (None if name in subdirectories
                                            else (stat.st_size, stat.st_mtime_ns))
  return found


def changes(before: dict, after: dict) -> list:
  return sorted([f"written {p}" for p in after.keys() - before.keys()] +
                [f"removed {p}" for p in before.keys() - after.keys()] +
                [f"rewritten {p}" for p in before.keys() & after.keys() if before[p] != after[p]])


def run_case(case: dict, watch: bool = True) -> dict:
  """Runs one case with stdout and stderr captured at the file-descriptor level; with `watch`,
  lists what it changed under its cwd."""
  os.chdir(case["cwd"])
  saved_env = dict(os.environ)
  os.environ.update(case.get("env", {}))
  before = snapshot(case["cwd"]) if watch else {}
  outputs = [tempfile.TemporaryFile(mode="w+") for _ in range(2)]
  saved = [os.dup(1), os.dup(2)]
  sys.stdout.flush(), sys.stderr.flush()
  for fd, output in zip((1, 2), outputs):
    os.dup2(output.fileno(), fd)
  try:
    flags.FLAGS.unparse_flags()
    try:
      argv = parse_flags(["main.py", *case["argv"]])
      code = main(argv)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # what main.py would show as a traceback
      traceback.print_exc()
      code = 1
  finally:
    sys.stdout.flush(), sys.stderr.flush()
    for fd, old in zip((1, 2), saved):
      os.dup2(old, fd)
      os.close(old)
    os.environ.clear()
    os.environ.update(saved_env)
  stdout, stderr = (output.seek(0) or output.read() for output in outputs)
  return {"id": case["id"], "code": code, "stdout": stdout, "stderr": stderr,
          "changed": changes(before, snapshot(case["cwd"])) if watch else []}


def run_here(*argv: str, cwd) -> subprocess.CompletedProcess:
  """`python main.py ARGV` run in this process (TensorFlow already imported), as `run_case`
  runs a case; the working directory and the flags are restored afterwards.

  For tests of commands that refuse or fail: a fresh process per command would cost
  TensorFlow's import each time. Killing a command, or one that needs its own
  process (a cluster task, a server), takes a real `main.py` process instead.
  """
  saved_cwd, saved_streams = os.getcwd(), (sys.stdout, sys.stderr)
  # The process's own streams, writing to fds 1 and 2: pytest replaces sys.stdout and
  # sys.stderr with objects of its own, which run_case's redirection would not see. absl's
  # handler, which main.py's app.run installs, writes there too.
  sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
  absl_logging.use_absl_handler()
  handler = absl_logging.get_absl_handler().python_handler
  saved_handler_stream, handler.stream = handler.stream, sys.__stderr__
  try:
    result = run_case({"id": "", "argv": list(argv), "cwd": str(cwd)}, watch=False)
  finally:
    handler.stream = saved_handler_stream
    sys.stdout, sys.stderr = saved_streams
    os.chdir(saved_cwd)
    flags.FLAGS.unparse_flags()
  return subprocess.CompletedProcess(["main.py", *argv], result["code"], result["stdout"],
                                     result["stderr"])


def main_() -> None:
  cases_path, results_path = sys.argv[1:]
  for command in COMMANDS.values():  # every command's flags, as main.py adopts them
    flags.adopt_module_key_flags(sys.modules[command.__module__])
  with open(cases_path) as f:
    cases = json.load(f)
  with open(results_path, "w") as f:
    json.dump([run_case(case) for case in cases], f)


if __name__ == "__main__":
  main_()
