"""Optional parts of stem_tfrs, and the extra that installs each.

The core (prepare, train, evaluate, export) needs only the required
dependencies. A command that needs an optional package imports it through
`need`, which names the extra to install when the package is missing:

  keras_tuner = need("keras_tuner", "tune", "python main.py tune")
  # without it: MissingExtraError: python main.py tune needs keras_tuner, which is
  # not installed: pip install "stem_tfrs[tune]"

A package that is installed but fails to import (a broken or mismatched
install) raises its own ImportError, not this one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stem_tfrs.errors import MissingExtraError

#: Extra name -> what it installs, as pyproject.toml declares it.
EXTRAS = {
    "tune": "KerasTuner (python main.py tune)",
    "plot": "matplotlib (the benchmark's plots)",
    "serving": "the TF Serving API package (the gRPC client: predict --protocol=grpc)",
    "beam": "Apache Beam (prepare --runner=...)",
    "test": "the test tools, and every extra above",
}


def need(module: str, extra: str, purpose: str) -> ModuleType:
  """Imports `module`, or says which extra installs it.

  Args:
    module: The module to import, e.g. "keras_tuner" or "matplotlib.pyplot".
    extra: The extra of stem_tfrs that installs it (a key of `EXTRAS`).
    purpose: What needs it, as the user typed it, e.g. "python main.py tune".

  Returns:
    The imported module.

  Raises:
    MissingExtraError: The module's top-level package is not installed.
    ValueError: `extra` is not one of `EXTRAS`.
  """
  if extra not in EXTRAS:
    raise ValueError(f"extra must be one of {sorted(EXTRAS)}, got {extra!r}")
  try:
    return importlib.import_module(module)
  except ImportError as e:
    top = module.split(".")[0]
    if e.name is None or e.name.split(".")[0] != top:
      raise  # installed, but broken: its own error says why
    raise MissingExtraError(f"{purpose} needs {top}, which is not installed: "
                            f"pip install \"stem_tfrs[{extra}]\"") from e
