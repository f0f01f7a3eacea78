"""Training runs: validate inputs, build, compile, `model.fit` with Keras callbacks, evaluate, export.

A run directory holds everything needed to trace a reported number:

    <run_dir>/config.json        every hyper-parameter, the schema path, versions
    <run_dir>/checkpoints/       the best weights by validation AUC
    <run_dir>/logs/              TensorBoard (per-task losses, AUCs, learning rate)
    <run_dir>/backup/            BackupAndRestore state while a run is in flight
    <run_dir>/training.json      per-epoch history, wall time, examples/s
    <run_dir>/metrics.json       {"<split>": {"<task>": {"logloss", "auc", "gauc", ...}}}
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Dict, List, Optional

from absl import logging
import tensorflow as tf
import tensorflow_recommenders as tfrs

from stem_tfrs import data, evaluation, export
from stem_tfrs.config import ConfigError, ModelConfig, TrainConfig
from stem_tfrs.models import MODELS, build_model
from stem_tfrs.schema import Schema, load_stats

MONITOR = "val_auc"


@dataclasses.dataclass
class TrainResult:
  """What a finished run produced."""
  run_dir: str
  metrics: evaluation.Metrics
  export_path: Optional[str]
  history: Dict[str, List[float]]
  seconds: float
  model: tf.keras.Model


class MeanValidationAUC(tf.keras.callbacks.Callback):
  """Adds `val_auc`, the mean of the tasks' `val_<task>_auc`, to the epoch logs.

  Early stopping, checkpointing and learning-rate decay all monitor it; it
  must come before them in the callback list.
  """

  def __init__(self, tasks):
    super().__init__()
    self.keys = [f"val_{task}_auc" for task in tasks]

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None and all(k in logs for k in self.keys):
      logs[MONITOR] = sum(float(logs[k]) for k in self.keys) / len(self.keys)


def default_run_dir(model_name: str) -> str:
  return os.path.join("runs", f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def callbacks(config: TrainConfig, tasks: List[str], run_dir: str) -> list:
  """The Keras callbacks of a run, in the order they must run."""
  return [
      MeanValidationAUC(tasks),
      tf.keras.callbacks.TerminateOnNaN(),
      tf.keras.callbacks.ModelCheckpoint(
          os.path.join(run_dir, "checkpoints", "best"), monitor=MONITOR, mode="max",
          save_best_only=True, save_weights_only=True),
      tf.keras.callbacks.EarlyStopping(
          monitor=MONITOR, mode="max", patience=config.early_stop_patience),
      tf.keras.callbacks.ReduceLROnPlateau(
          monitor=MONITOR, mode="max", factor=config.reduce_lr_factor, patience=0,
          min_lr=0.0),
      tf.keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), profile_batch=0),
      tf.keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
  ]


def load_and_check(model_config: ModelConfig, config: TrainConfig) -> Schema:
  """Everything that can be checked before a run writes anything.

  Raises:
    ConfigError, SchemaError: naming what is wrong.
  """
  if config.model not in MODELS:
    raise ConfigError(
        f"unknown model '{config.model}'; choose one of: {', '.join(MODELS)}")
  schema = Schema.load(config.data_dir)
  model_config.task_loss_weights(schema.tasks)
  data.validate_shards(schema)
  return schema


def _write_json(path: str, content) -> None:
  with open(path, "w") as f:
    json.dump(content, f, indent=2, sort_keys=False)
    f.write("\n")


def train(model_config: ModelConfig, config: TrainConfig, verbose: int = 1) -> TrainResult:
  """Trains, evaluates (valid and test, exact metrics) and exports one model.

  Args:
    model_config: The architecture's hyper-parameters.
    config: Data, run directory, optimizer, stopping.
    verbose: Keras `fit` verbosity (1: progress bars, 2: a line per epoch).

  Returns:
    The run's `TrainResult`; the trained model carries the best weights.

  Raises:
    ConfigError, SchemaError: before anything is written.
    tf.errors.OpError: bad data met while training (e.g. a label not 0/1);
      metrics.json and the export are then not written.
  """
  schema = load_and_check(model_config, config)
  run_dir = config.run_dir or default_run_dir(config.model)
  os.makedirs(run_dir, exist_ok=True)
  run_config = {
      "model": config.model,
      "schema": os.path.join(schema.directory, "schema.json"),
      "tasks": schema.tasks,
      "model_config": dataclasses.asdict(model_config),
      "train_config": dataclasses.asdict(config),
      "data_stats": load_stats(schema.directory),
      "versions": {"tensorflow": tf.__version__, "tensorflow_recommenders": tfrs.__version__},
  }
  _write_json(os.path.join(run_dir, "config.json"), run_config)

  tf.keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  previous_policy = tf.keras.mixed_precision.global_policy()
  if config.mixed_precision:
    tf.keras.mixed_precision.set_global_policy(config.mixed_precision)
  try:
    return _train(schema, model_config, config, run_dir, run_config, verbose)
  finally:
    tf.keras.mixed_precision.set_global_policy(previous_policy)


def _train(schema: Schema, model_config: ModelConfig, config: TrainConfig, run_dir: str,
           run_config: dict, verbose: int) -> TrainResult:
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    model = build_model(config.model, schema, model_config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
  train_ds = data.make_dataset(schema, "train", config.batch_size, shuffle=True,
                               seed=config.seed, shuffle_buffer=config.shuffle_buffer)
  valid_ds = data.make_dataset(schema, "valid", config.eval_batch_size)

  logging.info("training %s on %s into %s", config.model, schema.directory, run_dir)
  start = time.time()
  history = model.fit(train_ds, validation_data=valid_ds, epochs=config.epochs,
                      callbacks=callbacks(config, schema.tasks, run_dir), verbose=verbose)
  train_seconds = time.time() - start
  model.load_weights(os.path.join(run_dir, "checkpoints", "best")).expect_partial()

  metrics = {split: evaluation.evaluate(
                 model, schema, data.make_dataset(schema, split, config.eval_batch_size))
             for split in ("valid", "test")}
  train_rows = load_stats(schema.directory).get("train", {}).get("rows")
  epochs_run = len(history.history.get("loss", []))
  _write_json(os.path.join(run_dir, "training.json"), {
      "epochs_run": epochs_run,
      "train_seconds": train_seconds,
      "train_examples_per_second": (train_rows * epochs_run / train_seconds
                                    if train_rows else None),
      "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
  })
  _write_json(os.path.join(run_dir, "metrics.json"), metrics)

  export_path = None
  if config.export_dir:
    export_path = export.export_saved_model(
        model, schema, config.export_dir, config.model,
        extra_files={"config.json": run_config})
    logging.info("exported %s", export_path)
  return TrainResult(run_dir=run_dir, metrics=metrics, export_path=export_path,
                     history=history.history, seconds=time.time() - start, model=model)
