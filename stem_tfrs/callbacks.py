"""The Keras callbacks of a training run: what they monitor, divergence, resuming.

Early stopping, the best checkpoint and learning-rate decay all monitor
`MONITOR`, the mean of the tasks' validation AUCs. `for_run` lists a run's
callbacks in the order they must run.
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

from stem_tfrs.checkpoints import without_optimizer
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
      tf.keras.callbacks.BackupAndRestore(backup),
      ResumedCallbackState(state_path(run_dir), monitored, write=chief),
  ]
