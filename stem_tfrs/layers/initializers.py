"""How `ModelConfig.initialization` starts the weights: its name -> the Keras initializers."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from stem_tfrs.config import INITIALIZATIONS


class Initializers(NamedTuple):
  """What the layers take as `embeddings_initializer` and `kernel_initializer`.

  Each is a Keras initializer identifier; a layer makes its own copy for
  every weight (`fresh`). Biases start at zero in every scheme.
  """
  embeddings: object
  kernel: object


def initializers(initialization: str) -> Initializers:
  """The initializers of the scheme `initialization` (one of `INITIALIZATIONS`).

  "keras": Keras' defaults: embedding tables truncated normal (stddev 0.05),
  dense kernels Glorot uniform.

  "fuxictr": the authors' FuxiCTR code: embedding tables normal with mean 0
  and stddev 1e-4 (not truncated), every dense kernel Xavier normal (not
  truncated, stddev sqrt(2 / (fan_in + fan_out))).

  A stacked-experts kernel takes the per-expert initializer: `ExpertGroup`
  gives each expert its own fans.
  """
  if initialization == "keras":
    return Initializers(embeddings="truncated_normal", kernel="glorot_uniform")
  if initialization == "fuxictr":
    return Initializers(
        embeddings=tf.keras.initializers.RandomNormal(mean=0.0, stddev=1e-4),
        kernel=tf.keras.initializers.VarianceScaling(
            scale=1.0, mode="fan_avg", distribution="untruncated_normal"))
  raise ValueError(f"unknown initialization '{initialization}'; choose one of: "
                   f"{', '.join(INITIALIZATIONS)}")


def fresh(initializer) -> tf.keras.initializers.Initializer:
  """A new instance of `initializer` (a name, a serialized config or an instance).

  One per weight: an unseeded Keras initializer instance gives the same
  values at every call, so weights that shared one would start equal.
  """
  initializer = tf.keras.initializers.get(initializer)
  return type(initializer).from_config(initializer.get_config())
