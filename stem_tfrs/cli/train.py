"""`python main.py train`: train, evaluate and export one model."""

from __future__ import annotations

import os
from typing import List

from absl import flags, logging

from stem_tfrs import evaluation
from stem_tfrs.training import distributed, trainer
from stem_tfrs.cli.cluster import LISTEN_ON_ALL_INTERFACES
from stem_tfrs.cli.errors import one_line_errors
from stem_tfrs.config import (EXPORT_PRECISIONS, INITIALIZATIONS, OPTIMIZERS, STRATEGIES,
                              ConfigError, ModelConfig, TrainConfig)
from stem_tfrs.models import MODEL_NAMES
from stem_tfrs.data.schema import SCHEMA_FILE

_M, _T = ModelConfig(), TrainConfig()  # the defaults live in the dataclasses
EMBEDDED_DATA_DIR = _T.data_dir
EMBEDDED_ROWS = 400_000

# Data and run.
flags.DEFINE_enum("model", _T.model, MODEL_NAMES, "Architecture to train.")
flags.DEFINE_string("data_dir", _T.data_dir,
                    "Prepared data set (schema.json, stats.json, shards). The default "
                    "directory is filled with the embedded synthetic data if absent.")
flags.DEFINE_integer("synthetic_rows", EMBEDDED_ROWS,
                     "Rows of embedded synthetic data to generate when --data_dir is the "
                     "default and holds no data set yet.")
flags.DEFINE_string("run_dir", "", "Run directory (config, checkpoints, logs, metrics). "
                    "Default: runs/<model>-<date>-<time>.")
flags.DEFINE_string("export_dir", _T.export_dir,
                    "Base directory of SavedModel exports (<export_dir>/<model>/<version>); "
                    "empty to skip the export.")
# Optimization.
flags.DEFINE_integer("epochs", _T.epochs, "Maximum training epochs.")
flags.DEFINE_integer("steps_per_epoch", _T.steps_per_epoch,
                     "Training steps of an epoch (0: one pass over the train split); with N, "
                     "validation, checkpoints and early stopping come every N batches of one "
                     "continuous shuffled stream.")
flags.DEFINE_integer("batch_size", _T.batch_size, "Training examples per step.")
flags.DEFINE_integer("eval_batch_size", _T.eval_batch_size, "Evaluation examples per step.")
flags.DEFINE_float("learning_rate", _T.learning_rate, "Adam learning rate.")
flags.DEFINE_float("gradient_clip_norm", _T.gradient_clip_norm,
                   "Clip the global norm of every step's gradients, all variables' "
                   "together, at this value, as the authors' trainer does (default "
                   f"{_T.gradient_clip_norm:g}; 0: off). A resumed run must keep its own.")
flags.DEFINE_enum("optimizer", _T.optimizer, list(OPTIMIZERS),
                  "adam: every embedding row's moments decay and the row moves every step, as "
                  "in the paper; lazy_adam: only the rows the batch looked up (a step then "
                  "costs what the batch reads, not what the vocabulary holds).")
flags.DEFINE_integer("seed", _T.seed, "Seed of weights, shuffling and dropout.")
flags.DEFINE_integer("early_stop_patience", _T.early_stop_patience,
                     "Epochs without a gain in mean validation AUC before stopping.")
flags.DEFINE_bool("in_memory", _T.in_memory,
                  "Parse the training split once and serve batches from RAM, fully "
                  "reshuffled each epoch (a full shuffle, no parsing; the split must fit in memory).")
flags.DEFINE_enum("strategy", _T.strategy, list(STRATEGIES),
                  "tf.distribute strategy: default (one device), mirrored (local GPUs), "
                  "multi_worker or parameter_server (both read TF_CONFIG; see "
                  "docs/distributed.md).")
flags.DEFINE_bool("deterministic", _T.deterministic,
                  "Deterministic TensorFlow ops: the same seed gives the same metrics.")
flags.DEFINE_integer("steps_per_execution", _T.steps_per_execution,
                     "Training and evaluation steps per call into TensorFlow (Keras' "
                     "steps_per_execution): fewer Python round trips, faster for small models.")
flags.DEFINE_enum("export_precision", _T.export_precision, list(EXPORT_PRECISIONS),
                  "What the exported weights are stored and multiplied in: bfloat16 halves "
                  "the model's memory and the bytes a request reads; probabilities stay float32. "
                  "`export --run_dir` without it uses the run's own.")
flags.DEFINE_enum("mixed_precision", "", ["", "mixed_bfloat16"],
                  "Compute in bfloat16 with float32 variables, losses and outputs "
                  "(much faster on CPUs with AMX/AVX512-BF16; empty: float32).")
# Architecture (names as in the STEM-Net authors' configs).
flags.DEFINE_integer("embedding_dim", _M.embedding_dim, "Width D of every embedding table.")
flags.DEFINE_integer("num_layers", _M.num_layers, "Stacked STEM layers.")
flags.DEFINE_integer("num_shared_experts", _M.num_shared_experts,
                     "Shared experts per layer (K_h).")
flags.DEFINE_integer("num_specific_experts", _M.num_specific_experts,
                     "Task-specific experts per task and layer (K_s).")
flags.DEFINE_list("expert_hidden_units", list(map(str, _M.expert_hidden_units)),
                  "Expert MLP widths, comma-separated; the last is the expert output.")
flags.DEFINE_list("gate_hidden_units", list(map(str, _M.gate_hidden_units)),
                  "Gate MLP hidden widths, comma-separated (may be empty).")
flags.DEFINE_list("tower_hidden_units", list(map(str, _M.tower_hidden_units)),
                  "Tower MLP hidden widths, comma-separated (may be empty).")
flags.DEFINE_float("net_dropout", _M.net_dropout, "Dropout rate in experts, gates, towers.")
flags.DEFINE_bool("batch_norm", _M.batch_norm, "Batch normalization in hidden layers.")
flags.DEFINE_float("embedding_l2", _M.embedding_l2,
                   "L2 factor on the embedding rows used in each batch (per example).")
flags.DEFINE_enum("initialization", _M.initialization, list(INITIALIZATIONS),
                  "How the weights start: 'keras' (embeddings truncated normal, kernels Glorot "
                  "uniform) or 'fuxictr', as the authors' code (embeddings normal with stddev "
                  "1e-4, kernels Xavier normal). Biases start at zero.")
flags.DEFINE_list("loss_weights", None,
                  "One loss weight per task, comma-separated, in schema task order. "
                  "Default: 1 for every task.")
flags.DEFINE_integer("verbose", 1, "Keras fit verbosity: 0 silent, 1 progress bars, "
                     "2 one line per epoch.")

FLAGS = flags.FLAGS


def _ints(name: str) -> tuple:
  try:
    return tuple(int(v) for v in FLAGS[name].value)
  except ValueError:
    raise ConfigError(f"--{name} must be comma-separated integers, got "
                      f"'{','.join(FLAGS[name].value)}'")


def configs_from_flags() -> tuple:
  """(ModelConfig, TrainConfig) from the parsed flags; ConfigError if invalid."""
  try:
    loss_weights = (tuple(float(w) for w in FLAGS.loss_weights)
                    if FLAGS.loss_weights else None)
  except ValueError:
    raise ConfigError(f"--loss_weights must be comma-separated numbers, got "
                      f"'{','.join(FLAGS.loss_weights)}'")
  model_config = ModelConfig(
      embedding_dim=FLAGS.embedding_dim, num_layers=FLAGS.num_layers,
      num_shared_experts=FLAGS.num_shared_experts,
      num_specific_experts=FLAGS.num_specific_experts,
      expert_hidden_units=_ints("expert_hidden_units"),
      gate_hidden_units=_ints("gate_hidden_units"),
      tower_hidden_units=_ints("tower_hidden_units"),
      net_dropout=FLAGS.net_dropout, batch_norm=FLAGS.batch_norm,
      embedding_l2=FLAGS.embedding_l2, loss_weights=loss_weights,
      initialization=FLAGS.initialization)
  train_config = TrainConfig(
      model=FLAGS.model, data_dir=FLAGS.data_dir, run_dir=FLAGS.run_dir,
      export_dir=FLAGS.export_dir, epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
      batch_size=FLAGS.batch_size,
      eval_batch_size=FLAGS.eval_batch_size, learning_rate=FLAGS.learning_rate,
      gradient_clip_norm=FLAGS.gradient_clip_norm,
      optimizer=FLAGS.optimizer, seed=FLAGS.seed, early_stop_patience=FLAGS.early_stop_patience,
      in_memory=FLAGS.in_memory, deterministic=FLAGS.deterministic, strategy=FLAGS.strategy,
      mixed_precision=FLAGS.mixed_precision, export_precision=FLAGS.export_precision,
      steps_per_execution=FLAGS.steps_per_execution)
  return model_config, train_config


def flags_from_configs(model_config: ModelConfig, train_config: TrainConfig) -> List[str]:
  """The `train` flags that rebuild these configs: the inverse of `configs_from_flags`.

  One "--name=value" per line of a flagfile; run dir and export dir are left
  to the command line.
  """
  m, t = model_config, train_config
  units = lambda values: ",".join(str(v) for v in values)
  lines = [f"--model={t.model}", f"--data_dir={t.data_dir}",
           f"--embedding_dim={m.embedding_dim}", f"--num_layers={m.num_layers}",
           f"--num_shared_experts={m.num_shared_experts}",
           f"--num_specific_experts={m.num_specific_experts}",
           f"--expert_hidden_units={units(m.expert_hidden_units)}",
           f"--gate_hidden_units={units(m.gate_hidden_units)}",
           f"--tower_hidden_units={units(m.tower_hidden_units)}",
           f"--net_dropout={m.net_dropout!r}", f"--{'' if m.batch_norm else 'no'}batch_norm",
           f"--embedding_l2={m.embedding_l2!r}", f"--initialization={m.initialization}"]
  if m.loss_weights:
    lines.append(f"--loss_weights={units(m.loss_weights)}")
  lines += [f"--epochs={t.epochs}", f"--steps_per_epoch={t.steps_per_epoch}",
            f"--batch_size={t.batch_size}",
            f"--eval_batch_size={t.eval_batch_size}", f"--learning_rate={t.learning_rate!r}",
            f"--gradient_clip_norm={t.gradient_clip_norm!r}", f"--optimizer={t.optimizer}",
            f"--seed={t.seed}", f"--early_stop_patience={t.early_stop_patience}",
            f"--{'' if t.in_memory else 'no'}in_memory",
            f"--{'' if t.deterministic else 'no'}deterministic",
            f"--mixed_precision={t.mixed_precision}",
            f"--export_precision={t.export_precision}", f"--strategy={t.strategy}",
            f"--steps_per_execution={t.steps_per_execution}"]
  return lines


def ensure_embedded_data(data_dir: str, rows: int) -> None:
  """Prepares the embedded synthetic data in `data_dir` if it holds none yet."""
  if os.path.isfile(os.path.join(data_dir, SCHEMA_FILE)):
    return
  from data_prep.synthetic import prepare_synthetic  # only needed the first time
  print(f"preparing the embedded synthetic data ({rows:,} rows) in {data_dir} ...")
  prepare_synthetic(data_dir, rows=rows)


@one_line_errors
def run(argv: List[str]) -> int:
  del argv
  model_config, train_config = configs_from_flags()
  trainer.check_settings(model_config, train_config)  # a cluster's rendezvous waits for all
  strategy = distributed.make_strategy(  # before any other op
      train_config.strategy, listen_on_all_interfaces=LISTEN_ON_ALL_INTERFACES.value)
  if not FLAGS["data_dir"].present:
    ensure_embedded_data(train_config.data_dir, FLAGS.synthetic_rows)
  result = trainer.train(model_config, train_config, verbose=FLAGS.verbose,
                          strategy=strategy)
  if result.model is None:
    print(f"worker done; the chief writes {result.run_dir}")
    return 0
  print()
  print(evaluation.format_table(result.metrics))
  print(f"\nrun directory: {result.run_dir}")
  if result.export_path:
    print(f"SavedModel:    {result.export_path}")
  logging.info("train wall time %.1f s", result.seconds)
  return 0
