"""Training runs: one run (`trainer.train`), its callbacks and checkpoints, the
distribution strategy, the optimizers, the model comparison (`comparison`) and
the hyper-parameter search (`tuning`).

`train`, `TrainResult`, `TrainingDiverged` and `RunFinished` are loaded from
`trainer` on first use (PEP 562), so that `stem_tfrs.training.distributed`
(which `main.py server` imports) does not import the models and TFRS.
"""

import importlib

_EXPORTS = {"train": "trainer", "TrainResult": "trainer", "default_run_dir": "trainer",
            "TrainingDiverged": "trainer", "RunFinished": "trainer"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  globals()[name] = value
  return value
