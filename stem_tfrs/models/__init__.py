"""Model registry: `--model` names -> `MultiTaskRankingModel` subclasses.

Every model shares the embedding layer, the towers, the Ranking tasks, the
data pipeline and the metrics; only the backbone differs, so comparisons
between them are fair.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Type

import tensorflow as tf

from stem_tfrs.config import ConfigError, ModelConfig
from stem_tfrs.models.aitm import AITM
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.models.esmm import ESMM
from stem_tfrs.models.moe import MMoE, OMoE
from stem_tfrs.models.ple import MEPLE, PLE
from stem_tfrs.models.shared_bottom import SharedBottom
from stem_tfrs.models.single_task import SingleTask
from stem_tfrs.models.stem import MEMMoE, STEMNet
from stem_tfrs.data.schema import Schema

MODELS: Dict[str, Type[MultiTaskRankingModel]] = {
    "stem": STEMNet,
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "omoe": OMoE,
    "mmoe": MMoE,
    "ple": PLE,
    "aitm": AITM,
    "esmm": ESMM,
    "me_mmoe": MEMMoE,
    "me_ple": MEPLE,
}
MODEL_NAMES = tuple(MODELS)


def build_model(name: str, schema: Schema, config: ModelConfig) -> MultiTaskRankingModel:
  """Builds the registered architecture `name` for `schema`'s features and tasks.

  The model comes back built: every weight exists.

  Raises:
    ConfigError: `name` is not registered, or `config` does not suit it.
  """
  if name not in MODELS:
    raise ConfigError(
        f"unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}")
  MODELS[name].check_config(config)
  return MODELS[name](schema, config, name=name).build_from_schema()


@contextlib.contextmanager
def global_dtype_policy(name: Optional[str]) -> Iterator[None]:
  """Keras' global dtype policy set to `name` in the block (models built there take it),
  and the previous one back after it, however the block ends; `None` or "" leave it as is."""
  previous = tf.keras.mixed_precision.global_policy()
  if name:
    tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)


__all__ = ["MODELS", "MODEL_NAMES", "build_model", "global_dtype_policy",
           "MultiTaskRankingModel"] + [
    cls.__name__ for cls in MODELS.values()]
