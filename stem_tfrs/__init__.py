"""stem_tfrs: STEM-Net (Shared and Task-specific EMbeddings) on TensorFlow Recommenders.

TensorFlow Recommenders needs Keras 2 (the `tf-keras` package). TensorFlow 2.16+
picks Keras 2 for `tf.keras` only if `TF_USE_LEGACY_KERAS=1` is set before
TensorFlow is first imported, so this package sets it here, first thing.
Importing TensorFlow before `stem_tfrs` in the same process keeps Keras 3 and
fails loudly below instead of training with the wrong Keras.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402  (must follow the environment variable)

_keras_version = getattr(tf.keras, "version", lambda: "2.")()
if not _keras_version.startswith("2."):
  raise ImportError(
      f"stem_tfrs needs Keras 2 (tf-keras) but tf.keras is Keras {_keras_version}: "
      "import stem_tfrs before tensorflow, or set TF_USE_LEGACY_KERAS=1 in the "
      "environment.")

from stem_tfrs.schema import Schema, CategoricalFeature, NumericFeature  # noqa: E402
from stem_tfrs.config import ModelConfig, TrainConfig  # noqa: E402
from stem_tfrs.data import make_dataset  # noqa: E402
from stem_tfrs.models import build_model, MODEL_NAMES  # noqa: E402
from stem_tfrs.optimizers import FusedAdam, LazyAdam  # noqa: E402
from stem_tfrs.evaluation import evaluate  # noqa: E402
from stem_tfrs.export import export_saved_model  # noqa: E402
from stem_tfrs.training import train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Schema", "CategoricalFeature", "NumericFeature", "ModelConfig", "TrainConfig",
    "make_dataset", "build_model", "MODEL_NAMES", "FusedAdam", "LazyAdam", "evaluate",
    "export_saved_model", "train", "__version__",
]
