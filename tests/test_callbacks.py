"""stem_tfrs.training.callbacks: the state a resumed run carries over."""

import numpy as np
import tensorflow as tf

from stem_tfrs.training import callbacks


def test_resumed_callback_state_restores_only_the_epoch_it_follows(tmp_path):
  def monitored():
    return [tf.keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt"), monitor="val_auc",
                                               mode="max", save_best_only=True),
            tf.keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=3),
            tf.keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", patience=0)]
  before = monitored()
  before[0].best, before[1].wait, before[1].best, before[2].best = 0.8, 2, 0.8, 0.8
  writer = callbacks.ResumedCallbackState(str(tmp_path / "state.json"), before)
  writer.on_train_begin()
  writer.on_epoch_begin(0)
  writer.on_epoch_end(0, {"loss": 0.5, "val_auc": 0.8})
  writer.on_epoch_end(1, {"loss": 0.4, "val_auc": 0.7})
  for epoch, restored in ((2, True), (1, False)):
    after = monitored()
    for callback in after:
      callback.on_train_begin()
    reader = callbacks.ResumedCallbackState(str(tmp_path / "state.json"), after, write=False)
    reader.on_train_begin()
    reader.on_epoch_begin(epoch)
    assert (after[0].best, after[1].wait, after[2].best) == (
        (0.8, 2, 0.8) if restored else (-np.inf, 0, -np.inf))
    assert reader.history == ({"loss": [0.5, 0.4], "val_auc": [0.8, 0.7]} if restored else {})


def test_an_unreadable_state_file_starts_the_counters_over(tmp_path):
  (tmp_path / "state.json").write_text('{"epoch": 0, "history": {"lo')  # cut short
  stopping = tf.keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=3)
  stopping.on_train_begin()
  reader = callbacks.ResumedCallbackState(str(tmp_path / "state.json"), [stopping], write=False)
  reader.on_train_begin()
  reader.on_epoch_begin(1)
  assert (stopping.wait, stopping.best, reader.history) == (0, -np.inf, {})
