"""Runs `main.py` and SIGKILLs it at a chosen point: the fault drill's kill switch.

    python tests/kill_point.py MODULE:ATTRIBUTE[@TEXT] N main.py ARGS...

Before `main.py` runs, the callable `ATTRIBUTE` of `MODULE` (a function, or a
method as `Class.method`) is wrapped so that its N-th call (counting only calls
whose arguments' repr holds TEXT, if given) sends SIGKILL to this very process
before doing anything: no handler, no `finally`, no flush, as with `kill -9` or
a machine that loses power at that moment. Patch the name where the code looks
it up at call time (`stem_tfrs.training.trainer:write_json` for training's `from ...
import write_json`; `os:replace` for every `os.replace` call;
`tensorflow.io.gfile:rename@metrics.json` for the rename that puts a run's
metrics.json in place).

Exits 3 (and never kills) if the point was never reached N times, so a drill
that names a point the code no longer passes through fails instead of testing
nothing.
"""

import functools
import importlib
import os
import runpy
import signal
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
NOT_REACHED = 3


def _owner(target: str):
  """(object holding the attribute, attribute name) for 'module:Class.method' or 'module:fn'."""
  module_name, _, path = target.partition(":")
  owner = importlib.import_module(module_name)
  *parents, name = path.split(".")
  for parent in parents:
    owner = getattr(owner, parent)
  getattr(owner, name)  # AttributeError now, not a silent drill, if the point is gone
  return owner, name


def arm(target: str, nth: int) -> dict:
  """Wraps `target` so that its `nth` call kills this process; returns the call counter."""
  target, _, text = target.partition("@")
  owner, name = _owner(target)
  original = getattr(owner, name)
  calls = {"n": 0}

  @functools.wraps(original)
  def wrapper(*args, **kwargs):
    if text and text not in repr((args, kwargs)):
      return original(*args, **kwargs)
    calls["n"] += 1
    if calls["n"] == nth:
      os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

  # On a class, the wrapper binds to instances as the function it wraps did.
  static = isinstance(owner, type) and isinstance(owner.__dict__.get(name), staticmethod)
  setattr(owner, name, staticmethod(wrapper) if static else wrapper)
  return calls


def main() -> None:
  target, nth, script, *args = sys.argv[1:]
  calls = arm(target, int(nth))
  sys.argv = [script, *args]
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  code = 0
  try:
    runpy.run_path(script, run_name="__main__")
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  if calls["n"] < int(nth):
    print(f"kill_point: {target} was called {calls['n']} time(s), never the {nth}th",
          file=sys.stderr)
    sys.exit(NOT_REACHED)
  sys.exit(code)


if __name__ == "__main__":
  main()
