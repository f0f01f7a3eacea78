"""Model registry: `--model` names -> `MultiTaskRankingModel` subclasses."""

from __future__ import annotations

from typing import Dict, Type

from stem_tfrs.config import ConfigError, ModelConfig
from stem_tfrs.models.base import MultiTaskRankingModel
from stem_tfrs.models.stem import STEMNet
from stem_tfrs.schema import Schema

MODELS: Dict[str, Type[MultiTaskRankingModel]] = {
    "stem": STEMNet,
}
MODEL_NAMES = tuple(MODELS)


def build_model(name: str, schema: Schema, config: ModelConfig) -> MultiTaskRankingModel:
  """Builds the registered architecture `name` for `schema`'s features and tasks.

  The model comes back built: every weight exists.

  Raises:
    ConfigError: `name` is not registered.
  """
  if name not in MODELS:
    raise ConfigError(
        f"unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}")
  return MODELS[name](schema, config, name=name).build_from_schema()


__all__ = ["MODELS", "MODEL_NAMES", "build_model", "MultiTaskRankingModel", "STEMNet"]
