"""The Keras callbacks of a training run: what they monitor, divergence, resuming.

Early stopping, the best checkpoint and learning-rate decay all monitor
`MONITOR`, the mean of the tasks' validation AUCs. `for_run` lists a run's
callbacks in the order they must run. A run resumes from backup/ only if
the backup restores every variable of the model and its optimizer
(`restore_backup`, `CheckedBackupAndRestore`).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from stem_tfrs.training.checkpoints import (CheckpointError, checked_restore, unreadable,
                                   without_optimizer)
from stem_tfrs.config import TrainConfig
from stem_tfrs.files import write_json

MONITOR = "val_auc"
#: BackupAndRestore's directory in a run directory, and the callbacks' state file in it.
BACKUP_DIR = "backup"
STATE_FILE = "callbacks.json"


def state_path(run_dir: str) -> str:
  return os.path.join(run_dir, BACKUP_DIR, STATE_FILE)


def read_state(path: str) -> Optional[dict]:
  """A `ResumedCallbackState` file's content; None if there is none, or it cannot be read."""
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except ValueError as e:
    logging.warning("%s cannot be read (%s): the callbacks' counters start over", path, e)
    return None


def epochs_done(run_dir: str) -> int:
  """Epochs an interrupted run in `run_dir` finished, by its callbacks' state (0 if none)."""
  state = read_state(state_path(run_dir))
  return state["epoch"] + 1 if state is not None else 0


def _backup_remedy(backup_dir: str) -> str:
  return f"remove {backup_dir} to start the run over"


def restore_backup(model: tf.keras.Model, backup_dir: str) -> bool:
  """Restores the latest backup of `backup_dir` into `model` and its optimizer, checked.

  BackupAndRestore's own restore (Keras 2: `WorkerTrainingState.restore`,
  through `CheckpointManager.restore_or_initialize`) drops the load status:
  a backup that leaves variables at their initial values, or holds another
  model's, would be resumed. This restores the same checkpoint (the one
  backup/chief/checkpoint names, into the objects Keras' backup holds: the
  model, with its optimizer, built first as Keras builds it, and the epoch
  and step counters) and checks that every variable was restored and every
  value used. Keras then restores the same values again as `fit` begins.

  Returns:
    Whether `backup_dir` held a backup (False: the run starts over).

  Raises:
    CheckpointError (a ValueError): the backup cannot be read, or it does
      not restore exactly the model's and optimizer's variables; the
      message names the file and says to remove `backup_dir` to start over.
  """
  remedy = _backup_remedy(backup_dir)
  chief = os.path.join(backup_dir, "chief")
  try:
    latest = tf.train.latest_checkpoint(chief)
  except (tf.errors.OpError, ValueError) as e:
    raise unreadable(os.path.join(chief, "checkpoint"), e, remedy) from e
  if latest is None:
    # No backup was completed (a run killed as it wrote its first starts over, as Keras
    # starts it), unless the callbacks' state says that epochs were: then it is damaged.
    state = read_state(os.path.join(backup_dir, STATE_FILE))
    if state is not None:
      left = tf.io.gfile.listdir(chief) if tf.io.gfile.isdir(chief) else []
      raise CheckpointError(
          f"backup {backup_dir} cannot be resumed: {os.path.join(chief, 'checkpoint')} names "
          f"no complete checkpoint of the {state.get('epoch', 0) + 1} epoch(s) "
          f"{os.path.join(backup_dir, STATE_FILE)} records (holding: "
          f"{', '.join(sorted(left)) or 'nothing'}); {remedy}")
    return False
  optimizer = model.optimizer
  if (optimizer is not None and callable(getattr(optimizer, "build", None))
      and not getattr(optimizer, "_built", False)):  # as BackupAndRestore.on_train_begin does
    with model.distribute_strategy.scope():
      optimizer.build(model.trainable_variables)
  objects = {"model": model,
             "ckpt_saved_epoch": tf.Variable(-1, dtype=tf.int64, name="ckpt_saved_epoch"),
             "ckpt_saved_batch": tf.Variable(-1, dtype=tf.int64, name="ckpt_saved_batch")}
  if getattr(model, "_train_counter", None) is not None:
    objects["train_counter"] = model._train_counter  # pylint: disable=protected-access
  variables = list(model.variables)
  if optimizer is not None:
    held = optimizer.variables
    variables += list(held() if callable(held) else held)
  checked_restore(lambda: tf.train.Checkpoint(**objects).restore(latest), latest, variables,
                  "the model's and its optimizer's", remedy, remedy)
  return True


class CheckedBackupAndRestore(tf.keras.callbacks.BackupAndRestore):
  """BackupAndRestore that resumes only from a backup restoring every variable (see `restore_backup`).

  As training begins, the backup is checked by `restore_backup` (unless
  `checked` says it was, before anything of the run was written), then
  Keras restores it as usual (with the epoch to resume at); what either
  raises on a damaged backup becomes one `CheckpointError` line.
  """

  def __init__(self, backup_dir: str):
    super().__init__(backup_dir)
    self.checked = False

  def on_train_begin(self, logs=None):
    if not self.checked:
      restore_backup(self.model, self.backup_dir)
    try:
      super().on_train_begin(logs)
    except (tf.errors.OpError, IndexError, ValueError) as e:
      raise unreadable(os.path.join(self.backup_dir, "chief"), e,
                       _backup_remedy(self.backup_dir)) from e


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


class StopOnNonFiniteLoss(tf.keras.callbacks.Callback):
  """Stops training after the first epoch whose loss is NaN or infinite, and says where.

  Keras' TerminateOnNaN watches `loss` alone; a tfrs.Model's
  `regularization_loss` and `total_loss` can go first. `train` then raises
  `TrainingDiverged` instead of evaluating and exporting broken weights.
  This class reads the epoch logs (what parameter_server allows: its batch
  logs are remote values, and Keras refuses batch-level callbacks there);
  `StopOnNonFiniteBatchLoss` reads every batch's.
  """

  KEYS = ("loss", "regularization_loss", "total_loss")

  def __init__(self):
    super().__init__()
    self.diverged: Optional[str] = None  # what went non-finite, and when
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    self._check(logs, f"epoch {epoch + 1}")

  def _check(self, logs, when: str) -> None:
    for key in self.KEYS:
      value = (logs or {}).get(key)
      if self.diverged is None and value is not None and not math.isfinite(float(value)):
        self.diverged = f"{key} became {float(value)} at {when}"
        self.model.stop_training = True


class StopOnNonFiniteBatchLoss(StopOnNonFiniteLoss):
  """`StopOnNonFiniteLoss` that stops at the first batch whose loss is NaN or infinite."""

  def on_train_batch_end(self, batch, logs=None):
    self._check(logs, f"epoch {self._epoch + 1}, batch {batch + 1}")


class BestWeights(tf.keras.callbacks.ModelCheckpoint):
  """`ModelCheckpoint` that writes the model's weights without the optimizer's state.

  The best checkpoint is read by evaluation and export only, and is written
  again at every improvement: the optimizer's Adam moments would triple it
  (for a table of millions of ids, gigabytes per epoch). BackupAndRestore,
  which resumes a run, keeps the optimizer.
  """

  def _save_model(self, epoch, batch, logs):
    with without_optimizer(self.model):
      super()._save_model(epoch, batch, logs)


class ResumedCallbackState(tf.keras.callbacks.Callback):
  """Carries the other callbacks' counters and the epochs' logs across a resumed run.

  BackupAndRestore brings back the weights, the optimizer and the epoch, but
  ModelCheckpoint, EarlyStopping and ReduceLROnPlateau would start over (the
  first resumed epoch always "best", the learning-rate and stopping counters
  at zero), and Keras' History would hold only the resumed epochs. After each
  epoch this writes their state and the logs so far to `path` (it must come
  after BackupAndRestore in the callback list, so that the state never runs
  ahead of the backup); when a run resumes at the epoch after the one the
  file describes, it puts them back, `history` holds every epoch, and
  `earlier_seconds` the training time of the sessions before.

  Args:
    path: The state file, inside BackupAndRestore's directory (which goes,
      with it, when a run ends).
    tracked: The callbacks whose counters to carry.
    write: Whether this process writes the file (the chief, in a cluster).
  """

  FIELDS = ("best", "wait", "best_epoch", "cooldown_counter")

  def __init__(self, path: str, tracked: List[tf.keras.callbacks.Callback], write: bool = True):
    super().__init__()
    self.path = path
    self.tracked = tracked
    self.write = write
    self.history: Dict[str, List[float]] = {}
    self.earlier_seconds = 0.0  # training time of the sessions before this one
    self._resuming = False
    self._session_start = time.time()

  def on_train_begin(self, logs=None):
    self.history, self._resuming = {}, True
    self.earlier_seconds, self._session_start = 0.0, time.time()

  def on_epoch_begin(self, epoch, logs=None):
    if not self._resuming:
      return
    self._resuming = False
    state = read_state(self.path) if epoch > 0 else None
    if state is None:
      return
    if state["epoch"] != epoch - 1:
      logging.warning("%s describes epoch %d, not %d, the one before the resumed epoch: the "
                      "callbacks' counters start over", self.path, state["epoch"] + 1, epoch)
      return
    for callback, fields in zip(self.tracked, state["callbacks"]):
      for name, value in fields.items():
        setattr(callback, name, value)
    self.history = state["history"]
    self.earlier_seconds = float(state.get("seconds", 0.0))

  def on_epoch_end(self, epoch, logs=None):
    for key, value in (logs or {}).items():
      self.history.setdefault(key, []).append(float(value))
    if self.write:
      state = {"epoch": epoch, "history": self.history,
               "seconds": self.earlier_seconds + time.time() - self._session_start,
               "callbacks": [{name: _plain(getattr(c, name)) for name in self.FIELDS
                              if hasattr(c, name)} for c in self.tracked]}
      write_json(self.path, state)  # never half a file

  def on_train_end(self, logs=None):
    if self._resuming:  # no epoch was left to run: the history is the saved one
      state = read_state(self.path)
      self.history = state["history"] if state is not None else {}
      self.earlier_seconds = float(state.get("seconds", 0.0)) if state is not None else 0.0
    # The run is over (finished or stopped): nothing is left to resume.
    if self.write and tf.io.gfile.exists(self.path):
      tf.io.gfile.remove(self.path)


def _plain(value):
  """A counter or monitored value as a JSON number (inf and nan included)."""
  return int(value) if isinstance(value, (int, np.integer)) else float(value)


def for_run(config: TrainConfig, tasks: List[str], run_dir: str, chief: bool = True) -> list:
  """The Keras callbacks of a training run, in the order they must run.

  `chief`: whether this process writes the run directory (see `train`).
  """
  monitored = [
      BestWeights(os.path.join(run_dir, "checkpoints", "best"), monitor=MONITOR, mode="max",
                  save_best_only=True, save_weights_only=True),
      tf.keras.callbacks.EarlyStopping(
          monitor=MONITOR, mode="max", patience=config.early_stop_patience),
  ]
  if config.reduce_lr_factor < 1.0:  # 1: the rate never decays (Keras refuses a factor of 1)
    monitored.append(tf.keras.callbacks.ReduceLROnPlateau(
        monitor=MONITOR, mode="max", factor=config.reduce_lr_factor, patience=0, min_lr=0.0))
  backup = os.path.join(run_dir, BACKUP_DIR)
  return [
      MeanValidationAUC(tasks),
      (StopOnNonFiniteLoss() if config.strategy == "parameter_server"
       else StopOnNonFiniteBatchLoss()),
      *monitored,
      tf.keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), profile_batch=0),
      CheckedBackupAndRestore(backup),
      ResumedCallbackState(state_path(run_dir), monitored, write=chief),
  ]
