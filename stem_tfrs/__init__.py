"""stem_tfrs: STEM-Net (Shared and Task-specific EMbeddings) on TensorFlow Recommenders.

TensorFlow Recommenders needs Keras 2 (the `tf-keras` package). TensorFlow 2.16+
picks Keras 2 for `tf.keras` only if `TF_USE_LEGACY_KERAS=1` is set before
TensorFlow is first imported, so this package sets it here, first thing.
Importing TensorFlow before `stem_tfrs` in the same process keeps Keras 3 and
fails loudly below instead of training with the wrong Keras.

The public names below are loaded on first use (PEP 562 `__getattr__`), not
here: `import stem_tfrs.data.schema` (as `data_prep` does, in every worker process)
must not pay for TensorFlow Recommenders, the models, training and export.
`stem_tfrs.train`, `from stem_tfrs import train` and `dir(stem_tfrs)` work as
before, and so does `stem_tfrs.<submodule>` after a bare `import stem_tfrs`.
"""

import importlib
import importlib.util
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# The `stem-tfrs` console script is the command line, which keeps TensorFlow's C++ start-up
# lines off stderr as main.py does; its entry point can only run after this file has
# imported TensorFlow, so the setting is made here, for that script alone.
if os.path.basename(sys.argv[0] if sys.argv else "") == "stem-tfrs":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402  (must follow the environment variable)

_keras_version = getattr(tf.keras, "version", lambda: "2.")()
if not _keras_version.startswith("2."):
  raise ImportError(
      f"stem_tfrs needs Keras 2 (tf-keras) but tf.keras is Keras {_keras_version}: "
      "import stem_tfrs before tensorflow, or set TF_USE_LEGACY_KERAS=1 in the "
      "environment.")

__version__ = "0.1.0"

#: Public name -> the module that defines it, imported when the name is first read.
_EXPORTS = {
    "Schema": "stem_tfrs.data.schema",
    "CategoricalFeature": "stem_tfrs.data.schema",
    "NumericFeature": "stem_tfrs.data.schema",
    "ModelConfig": "stem_tfrs.config",
    "TrainConfig": "stem_tfrs.config",
    "make_dataset": "stem_tfrs.data.pipeline",
    "build_model": "stem_tfrs.models",
    "MODEL_NAMES": "stem_tfrs.models",
    "FusedAdam": "stem_tfrs.training.optimizers",
    "LazyAdam": "stem_tfrs.training.optimizers",
    "evaluate": "stem_tfrs.evaluation.metrics",
    "export_saved_model": "stem_tfrs.serving.export",
    "train": "stem_tfrs.training.trainer",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
  """A public name, or a submodule, imported on first access and then cached."""
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
  elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
    value = importlib.import_module(f"{__name__}.{name}")
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
