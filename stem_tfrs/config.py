"""Typed, validated configuration: parsed once at the edge, passed down as is.

Field names follow the STEM-Net authors' configuration keys, so that their
experiments translate one to one into flags (`--embedding_dim`, ...).
The defaults suit the embedded synthetic data on a 2-core CPU; the authors'
TikTok configuration is `ModelConfig.reference()` (shared/design/STEM.md).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Sequence, Tuple
from stem_tfrs.errors import ConfigError  # noqa: F401  (raised here; defined with the others)


def _positive_units(name: str, units: Sequence[int]) -> Tuple[int, ...]:
  units = tuple(int(u) for u in units)
  if any(u < 1 for u in units):
    raise ConfigError(f"--{name} must be positive integers, got {list(units)}")
  return units


#: How `ModelConfig.initialization` can start the weights: Keras' defaults, or as the
#: authors' FuxiCTR code does (`stem_tfrs.layers.initializers` maps each to its initializers).
INITIALIZATIONS = ("keras", "fuxictr")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture hyper-parameters shared by every model in the registry.

  Attributes:
    embedding_dim: D, the width of each embedding table (per task and shared).
    num_layers: Stacked STEM (or MoE) layers.
    num_shared_experts: K_h, shared experts per layer.
    num_specific_experts: K_s, task-specific experts per task and layer.
    expert_hidden_units: Expert MLP widths; the expert output is the last one.
    gate_hidden_units: Gate MLP hidden widths before the softmax layer.
    tower_hidden_units: Tower MLP hidden widths before the 1-unit logit.
    net_dropout: Dropout rate after every hidden layer (0 = none).
    batch_norm: Batch normalization after every hidden layer.
    embedding_l2: L2 factor on the embedding rows used in a batch (per example).
    loss_weights: One weight per task; None means 1 for every task.
    initialization: How the weights start: "keras" (embedding tables
      truncated normal with stddev 0.05, dense kernels Glorot uniform) or
      "fuxictr", as the authors' PyTorch code (FuxiCTR) does (embedding
      tables normal with stddev 1e-4, dense kernels Xavier normal). Biases
      start at zero either way; every expert's kernel is initialized for
      its own fans (`stem_tfrs.layers.initializers`).
  """
  embedding_dim: int = 16
  num_layers: int = 1
  num_shared_experts: int = 2
  num_specific_experts: int = 1
  expert_hidden_units: Tuple[int, ...] = (256, 128)
  gate_hidden_units: Tuple[int, ...] = (64,)
  tower_hidden_units: Tuple[int, ...] = (64,)
  net_dropout: float = 0.0
  batch_norm: bool = False
  embedding_l2: float = 1e-6
  loss_weights: Optional[Tuple[float, ...]] = None
  initialization: str = "keras"

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen dataclass
    for name in ("embedding_dim", "num_layers", "num_specific_experts"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.num_shared_experts < 0:
      raise ConfigError(
          f"--num_shared_experts must be >= 0, got {self.num_shared_experts}")
    if not self.expert_hidden_units:
      raise ConfigError("--expert_hidden_units needs at least one width")
    for name in ("expert_hidden_units", "gate_hidden_units",
                 "tower_hidden_units"):
      set_(name, _positive_units(name, getattr(self, name)))
    if not 0.0 <= self.net_dropout < 1.0:
      raise ConfigError(f"--net_dropout must be in [0, 1), got {self.net_dropout}")
    if not (math.isfinite(self.embedding_l2) and self.embedding_l2 >= 0):
      raise ConfigError(f"--embedding_l2 must be a number >= 0, got {self.embedding_l2}")
    if self.loss_weights is not None:
      weights = tuple(float(w) for w in self.loss_weights)
      if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ConfigError(f"--loss_weights must be numbers >= 0, got {list(weights)}")
      set_("loss_weights", weights)
    if self.initialization not in INITIALIZATIONS:
      raise ConfigError(f"unknown initialization '{self.initialization}'; choose one of: "
                        f"{', '.join(INITIALIZATIONS)}")

  def task_loss_weights(self, tasks: Sequence[str]) -> Tuple[float, ...]:
    """One weight per task, checked against the number of tasks."""
    if self.loss_weights is None:
      return tuple(1.0 for _ in tasks)
    if len(self.loss_weights) != len(tasks):
      raise ConfigError(
          f"--loss_weights has {len(self.loss_weights)} values but the data has "
          f"{len(tasks)} tasks {list(tasks)}")
    return self.loss_weights

  @classmethod
  def reference(cls) -> "ModelConfig":
    """The authors' TikTok configuration of STEM-Net."""
    return cls(embedding_dim=16, num_layers=1, num_shared_experts=8,
               num_specific_experts=1, expert_hidden_units=(512, 512, 512),
               gate_hidden_units=(128, 64), tower_hidden_units=(128, 64),
               net_dropout=0.0, batch_norm=False, embedding_l2=1e-6)


MIXED_PRECISION_POLICIES = ("", "mixed_bfloat16")
#: What an export's weights can be stored and multiplied in (`stem_tfrs.serving.export.with_precision`).
EXPORT_PRECISIONS = ("float32", "bfloat16")
#: Optimizers `train` can use: Adam over every row of the embedding table each step (the
#: paper's, `stem_tfrs.FusedAdam`), or over the rows the batch looked up (`stem_tfrs.LazyAdam`).
OPTIMIZERS = ("adam", "lazy_adam")
#: tf.distribute strategies `train` can run under (see `stem_tfrs.training.distributed`).
STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
#: What `tune` maximizes (the tasks' mean validation AUC or gAUC), and its KerasTuner oracles.
#: Here, not in stem_tfrs.training.tuning, so the CLI defines its flags without importing KerasTuner.
TUNE_OBJECTIVES = ("auc", "gauc")
TUNERS = ("random", "bayesian")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train: data, run directory, optimizer and stopping.

  Attributes:
    model: Registry name of the architecture (see `stem_tfrs.models`).
    data_dir: Prepared data set (schema.json, stats.json, shards).
    run_dir: Where config.json, checkpoints, logs and metrics.json go.
    export_dir: Base directory of SavedModel exports ("" = do not export).
    epochs: Maximum training epochs.
    steps_per_epoch: Training steps of an epoch (0: one pass over the train
      split). An epoch then ends, and validation, checkpointing, early
      stopping and learning-rate decay run, every `steps_per_epoch` batches
      of one continuous stream of shuffled passes: for splits so large that
      a pass is too long between validations.
    batch_size: Examples per training step.
    eval_batch_size: Examples per evaluation step.
    learning_rate: Adam learning rate.
    gradient_clip_norm: Clip the global norm of every step's gradients, all
      variables' together, at this value, as the authors' trainer does
      (FuxiCTR's `max_gradient_norm`, 10); 0 turns clipping off. Under a
      synchronous strategy the norm is that of the step's gradient summed
      over the replicas; a parameter-server worker clips its own steps'.
    optimizer: "adam" (the paper's: every embedding row's moments decay, and
      the row moves, every step) or "lazy_adam" (only the rows the batch
      looked up: a step's cost then grows with the batch, not with the
      vocabulary).
    seed: Seed of weights, shuffling and dropout.
    early_stop_patience: Epochs without validation AUC gain before stopping.
    reduce_lr_factor: Learning-rate factor applied when validation AUC stalls
      (1: never).
    shuffle_buffer: Examples in the training shuffle buffer.
    in_memory: Parse the training split once and serve its batches from
      memory, fully reshuffled every epoch (see `make_dataset`); for splits
      that fit in RAM.
    deterministic: Make TensorFlow ops deterministic (same seed, same metrics).
    strategy: tf.distribute strategy: "default", "mirrored", "multi_worker"
      or "parameter_server" (the last two read TF_CONFIG; see
      `stem_tfrs.training.distributed`).
    mixed_precision: "" (float32) or "mixed_bfloat16": bf16 compute with
      float32 variables, losses and outputs.
    export_precision: What the export's weights are stored and multiplied
      in, whatever `mixed_precision` trained them in: "float32" or
      "bfloat16" (half the bytes a request reads; probabilities stay float32).
    steps_per_execution: Training and evaluation steps per call into the
      compiled function (Keras' `steps_per_execution`): fewer round trips
      through Python, which matters for small models; batch-level callbacks
      then see every N-th batch. The splits' row counts (stats.json) give
      the exact number of steps of an epoch; without them it falls back to 1.
  """
  model: str = "stem"
  data_dir: str = "data/synthetic"
  run_dir: str = ""
  export_dir: str = "saved_models"
  epochs: int = 3
  steps_per_epoch: int = 0
  batch_size: int = 1024
  eval_batch_size: int = 8192
  learning_rate: float = 1e-3
  gradient_clip_norm: float = 10.0
  optimizer: str = "adam"
  seed: int = 2023
  early_stop_patience: int = 1
  reduce_lr_factor: float = 0.1
  shuffle_buffer: int = 100_000
  in_memory: bool = False
  deterministic: bool = True
  mixed_precision: str = ""
  export_precision: str = "float32"
  strategy: str = "default"
  steps_per_execution: int = 16

  def __post_init__(self):
    if self.mixed_precision not in MIXED_PRECISION_POLICIES:
      raise ConfigError(
          f"--mixed_precision must be one of {MIXED_PRECISION_POLICIES}, got "
          f"'{self.mixed_precision}' (mixed_float16 needs loss scaling, which tfrs.Model's "
          "train_step does not do)")
    if self.export_precision not in EXPORT_PRECISIONS:
      raise ConfigError(f"--export_precision must be one of {', '.join(EXPORT_PRECISIONS)}, "
                        f"got '{self.export_precision}'")
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f"unknown optimizer '{self.optimizer}'; choose one of: "
                        f"{', '.join(OPTIMIZERS)}")
    if self.strategy not in STRATEGIES:
      raise ConfigError(f"unknown strategy '{self.strategy}'; choose one of: "
                        f"{', '.join(STRATEGIES)}")
    for name in ("epochs", "batch_size", "eval_batch_size", "steps_per_execution"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.steps_per_epoch < 0:
      raise ConfigError(f"--steps_per_epoch must be >= 0 (0: one pass over the train split), "
                        f"got {self.steps_per_epoch}")
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ConfigError(f"--learning_rate must be a number > 0, got {self.learning_rate}")
    if not (isinstance(self.gradient_clip_norm, numbers.Real)
            and math.isfinite(self.gradient_clip_norm) and self.gradient_clip_norm >= 0):
      raise ConfigError(f"--gradient_clip_norm must be a finite number >= 0 (0: no clipping), "
                        f"got {self.gradient_clip_norm!r}")
    object.__setattr__(self, "gradient_clip_norm", float(self.gradient_clip_norm))  # (frozen)
    if not 0 <= self.seed < 2**32:
      raise ConfigError(f"--seed must be in [0, 2**32), got {self.seed}")
    if self.early_stop_patience < 0:
      raise ConfigError(
          f"--early_stop_patience must be >= 0, got {self.early_stop_patience}")
    if not 0.0 < self.reduce_lr_factor <= 1.0:
      raise ConfigError(
          f"--reduce_lr_factor must be in (0, 1], got {self.reduce_lr_factor}")
