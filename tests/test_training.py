"""stem_tfrs.training.trainer: the run directory, metrics, determinism, and a loss that goes down."""

import dataclasses
import json
import os
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import ModelConfig, TrainConfig, build_model, make_dataset, training
from stem_tfrs.training import callbacks
from stem_tfrs.training.trainer import make_optimizer
from stem_tfrs.config import ConfigError
from stem_tfrs.data.schema import Schema, SchemaError

from tests.support import tiny_model_config


def test_run_directory_holds_config_checkpoint_logs_and_metrics(trained_run):
  run = trained_run.run_dir
  config = json.load(open(os.path.join(run, "config.json")))
  assert config["model"] == "stem" and config["tasks"] == ["finish", "like"]
  assert config["schema"].endswith("schema.json") and os.path.isfile(config["schema"])
  assert set(config["model_config"]) == {f.name for f in dataclasses.fields(ModelConfig)}
  assert set(config["train_config"]) == {f.name for f in dataclasses.fields(TrainConfig)}
  assert any(n.startswith("best") for n in os.listdir(os.path.join(run, "checkpoints")))
  # The best checkpoint holds the model's weights, not the optimizer's moments of them.
  stored = tf.train.list_variables(os.path.join(run, "checkpoints", "best"))
  assert not [name for name, _ in stored if "optimizer" in name.lower()]
  table = trained_run.model.embedding.table.shape.as_list()
  assert [shape for _, shape in stored].count(table) == 1
  events = [f for _, _, files in os.walk(os.path.join(run, "logs")) for f in files]
  assert any(f.startswith("events.out.tfevents") for f in events)
  metrics = json.load(open(os.path.join(run, "metrics.json")))
  assert metrics == trained_run.metrics
  assert set(metrics) == {"valid", "test"}
  for split in metrics.values():
    assert set(split) == {"finish", "like"}
    for m in split.values():
      assert {"logloss", "auc", "gauc"} <= set(m)
      assert 0.0 < m["logloss"] < 1.0 and 0.0 <= m["gauc"] <= 1.0
      assert m["auc"] > 0.55  # the synthetic data carries signal a model must find
  history = json.load(open(os.path.join(run, "training.json")))
  assert history["epochs_run"] >= 1 and history["train_examples_per_second"] > 0


@pytest.mark.slow
def test_same_seed_gives_same_metrics(tiny_data, tmp_path):
  def run(name):
    config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / name), export_dir="",
                         epochs=1, batch_size=1024, seed=11)
    return training.train(tiny_model_config(net_dropout=0.1), config, verbose=0).metrics
  assert run("a") == run("b")


@pytest.mark.slow
def test_many_steps_per_execution_train_exactly_as_one(tiny_data, tmp_path):
  # ~16,000 train rows in batches of 700: 23 steps an epoch, one execution of 16 and one
  # of 7; ~2,000 valid rows in one batch, fewer than an execution.
  def run(name, steps_per_execution):
    config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / name), export_dir="",
                         epochs=2, batch_size=700, eval_batch_size=2048, seed=5,
                         steps_per_execution=steps_per_execution)
    result = training.train(tiny_model_config(), config, verbose=0)
    return result.history, result.metrics
  history, metrics = run("many", 16)
  assert len(history["loss"]) == 2 and len(history["val_auc"]) == 2
  assert (history, metrics) == run("one", 1)


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss(tiny_data):
  tf.keras.utils.set_random_seed(0)
  schema = Schema.load(tiny_data)
  model = build_model("stem", schema, tiny_model_config())
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
  batch = next(iter(make_dataset(schema, "train", 512)))
  before = model.compute_loss(batch)
  model.fit(tf.data.Dataset.from_tensors(batch).repeat(20), verbose=0)
  assert float(model.compute_loss(batch)) < 0.9 * float(before)


def test_loss_weights_scale_each_task(tiny_data):
  schema = Schema.load(tiny_data)
  batch = next(iter(make_dataset(schema, "train", 256)))
  tf.keras.utils.set_random_seed(0)
  plain = build_model("stem", schema, tiny_model_config())
  tf.keras.utils.set_random_seed(0)
  weighted = build_model("stem", schema, tiny_model_config(loss_weights=(2.0, 0.0)))
  logits = plain.compute_logits(batch[0])
  finish = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(batch[1]["finish"],
                                                                  logits["finish"]))
  np.testing.assert_allclose(float(weighted.compute_loss(batch)), 2 * float(finish), rtol=1e-5)


def test_bad_configuration_is_refused_before_anything_is_written(tiny_data, tmp_path):
  run_dir = tmp_path / "run"
  with pytest.raises(ConfigError, match="unknown model 'nope'; choose one of: stem"):
    training.train(tiny_model_config(), TrainConfig(model="nope", data_dir=tiny_data,
                                                    run_dir=str(run_dir)))
  with pytest.raises(ConfigError, match="loss_weights has 3 values but the data has 2 tasks"):
    training.train(tiny_model_config(loss_weights=(1, 1, 1)),
                   TrainConfig(data_dir=tiny_data, run_dir=str(run_dir)))
  with pytest.raises(ConfigError, match="MMoE mixes shared experts only: num_shared_experts "
                                        "must be >= 1, got 0"):
    training.train(tiny_model_config(num_shared_experts=0),
                   TrainConfig(model="mmoe", data_dir=tiny_data, run_dir=str(run_dir)))
  with pytest.raises(ConfigError, match=r"--batch_size=100000 is larger than the train split "
                                        r"\(\d+ rows\): a cluster run, or one with "
                                        r"--steps_per_epoch, reads whole batches only"):
    training.train(tiny_model_config(), TrainConfig(data_dir=tiny_data, run_dir=str(run_dir),
                                                    batch_size=100_000, steps_per_epoch=5))
  assert not run_dir.exists()


@pytest.mark.slow
def test_a_diverging_run_stops_and_writes_no_metrics_or_export(tiny_data, tmp_path):
  config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / "run"),
                       export_dir=str(tmp_path / "export"), epochs=2, batch_size=256,
                       learning_rate=1e30, steps_per_execution=1)
  with pytest.raises(training.TrainingDiverged,
                     match=r"training diverged: (loss|regularization_loss|total_loss) became "
                           r"(nan|inf|-inf) at epoch 1, batch \d+; no metrics or export"):
    training.train(tiny_model_config(), config, verbose=0)
  assert sorted(os.listdir(tmp_path / "run")) == ["checkpoints", "config.json", "logs"]
  assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(embedding_dim=0), "embedding_dim must be >= 1"),
    (dict(net_dropout=1.5), "net_dropout"),
    (dict(expert_hidden_units=()), "expert_hidden_units"),
    (dict(tower_hidden_units=(64, -1)), "tower_hidden_units must be positive"),
    (dict(embedding_l2=float("nan")), "embedding_l2 must be a number >= 0, got nan"),
    (dict(loss_weights=(1.0, float("inf"))), r"loss_weights must be numbers >= 0, got \[1.0, inf"),
])
def test_model_config_validation(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    ModelConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps_per_execution=0), "steps_per_execution must be >= 1, got 0"),
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
    (dict(learning_rate=float("nan")), "learning_rate must be a number > 0, got nan"),
    (dict(seed=-1), r"seed must be in \[0, 2\*\*32\), got -1"),
    (dict(seed=2**32), r"seed must be in \[0, 2\*\*32\), got 4294967296"),
    (dict(optimizer="sgd"), "unknown optimizer 'sgd'; choose one of: adam, lazy_adam"),
    (dict(steps_per_epoch=-1), r"steps_per_epoch must be >= 0 \(0: one pass over the train "
                               r"split\), got -1"),
    (dict(gradient_clip_norm=-1.0), r"--gradient_clip_norm must be a finite number >= 0 "
                                    r"\(0: no clipping\), got -1.0"),
    (dict(gradient_clip_norm=float("nan")), r"--gradient_clip_norm must be .*, got nan"),
    (dict(gradient_clip_norm=float("inf")), r"--gradient_clip_norm must be .*, got inf"),
])
def test_train_config_validation(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    TrainConfig(**kwargs)


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
def test_the_run_s_optimizer_clips_the_global_norm_at_the_configured_value(optimizer):
  clipped = make_optimizer(TrainConfig(optimizer=optimizer))
  assert clipped.global_clipnorm == 10.0 and clipped.clipnorm is None
  assert TrainConfig(gradient_clip_norm=3).gradient_clip_norm == 3.0
  off = make_optimizer(TrainConfig(optimizer=optimizer, gradient_clip_norm=0))
  assert off.global_clipnorm is None and off.clipnorm is None and off.clipvalue is None


def test_reference_configuration_is_the_authors():
  ref = ModelConfig.reference()
  assert (ref.embedding_dim, ref.num_shared_experts, ref.num_specific_experts) == (16, 8, 1)
  assert ref.expert_hidden_units == (512, 512, 512)
  assert ref.gate_hidden_units == (128, 64) and ref.tower_hidden_units == (128, 64)


@pytest.mark.slow
def test_mixed_bfloat16_trains_exports_float32_and_restores_the_policy(tiny_data, tmp_path):
  def run(name, policy, export_precision="float32"):
    config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / name),
                         export_dir=str(tmp_path / "export"), epochs=2, batch_size=256,
                         learning_rate=3e-3, seed=3, mixed_precision=policy,
                         export_precision=export_precision)
    return training.train(tiny_model_config(), config, verbose=0)
  bf16, fp32 = run("bf16", "mixed_bfloat16"), run("fp32", "", export_precision="bfloat16")
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  assert bf16.model.stem_layers[0].compute_dtype == "bfloat16"
  serve = tf.saved_model.load(bf16.export_path).signatures["serving_default"]
  assert all(spec.dtype == tf.float32 for spec in serve.structured_outputs.values())
  # The export is float32 (export_precision's default), whatever the training policy.
  with open(os.path.join(bf16.export_path, "assets.extra", "export.json")) as f:
    assert json.load(f) == {"dtype_policy": "float32"}
  with open(os.path.join(fp32.export_path, "assets.extra", "export.json")) as f:
    assert json.load(f) == {"dtype_policy": "bfloat16"}
  for task in ("finish", "like"):
    assert abs(bf16.metrics["test"][task]["auc"] - fp32.metrics["test"][task]["auc"]) < 0.01
    assert abs(bf16.metrics["test"][task]["logloss"]
               - fp32.metrics["test"][task]["logloss"]) < 0.01


def test_mixed_float16_is_refused_with_the_reason():
  with pytest.raises(ConfigError, match="mixed_float16 needs loss scaling"):
    TrainConfig(mixed_precision="mixed_float16")
  with pytest.raises(ConfigError, match="export_precision must be one of float32, bfloat16, "
                                        "got 'float16'"):
    TrainConfig(export_precision="float16")


def scalar_tags(log_dir):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  events = EventAccumulator(log_dir)
  events.Reload()
  return {tag: len(events.Tensors(tag)) for tag in events.Tags()["tensors"]}


def test_tensorboard_logs_per_task_losses_aucs_and_learning_rate(trained_run):
  train = scalar_tags(os.path.join(trained_run.run_dir, "logs", "train"))
  valid = scalar_tags(os.path.join(trained_run.run_dir, "logs", "validation"))
  epochs = len(trained_run.history["loss"])
  for task in ("finish", "like"):
    for metric in ("loss", "auc"):
      assert train[f"epoch_{task}_{metric}"] == epochs
      assert valid[f"epoch_{task}_{metric}"] == epochs
  assert train["epoch_lr"] == epochs and valid["epoch_auc"] == epochs  # mean validation AUC


@pytest.mark.slow
def test_mirrored_strategy_trains_and_exports_a_single_machine_model(tiny_data, tmp_path):
  config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / "run"),
                       export_dir=str(tmp_path / "export"), epochs=1, batch_size=512,
                       strategy="mirrored")
  result = training.train(tiny_model_config(), config, verbose=0)
  record = json.loads(open(os.path.join(result.run_dir, "training.json")).read())
  assert record["strategy"] == "mirrored" and record["replicas"] >= 1
  assert result.metrics["test"]["finish"]["auc"] > 0.55
  # The returned model is the rebuilt single-machine one, outside any strategy.
  assert not any(isinstance(v, tf.distribute.DistributedValues) for v in result.model.weights)
  assert tf.saved_model.load(result.export_path).signatures["serving_default"] is not None


def test_cluster_strategy_without_tf_config_is_a_one_line_error(tiny_data, tmp_path, monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / "run"),
                       strategy="parameter_server")
  with pytest.raises(ConfigError, match="TF_CONFIG is not set"):
    training.train(tiny_model_config(), config, verbose=0)
  assert not (tmp_path / "run").exists()


class _Interrupt(tf.keras.callbacks.Callback):
  """Stands in for a preempted machine: the process dies as epoch `at` (0-based) begins."""

  def __init__(self, at):
    super().__init__()
    self.at = at

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.at:
      raise KeyboardInterrupt(f"interrupted at epoch {epoch}")


class _FinalWeights(tf.keras.callbacks.Callback):
  """Keeps the weights as training ends (before the best checkpoint is loaded)."""

  def on_train_end(self, logs=None):
    self.weights = self.model.get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("in_memory", [False, True])
def test_epochs_of_a_few_steps_are_slices_of_one_stream_of_passes(tiny_data, tmp_path,
                                                                   monkeypatch, in_memory):
  # ~16,000 train rows in batches of 512: a pass is 32 batches, so 2 epochs of 20 steps
  # cross into a second pass. They must train as 1 epoch of 40 steps does.
  ends = []
  for_run = callbacks.for_run
  monkeypatch.setattr(callbacks, "for_run",
                      lambda *a: for_run(*a) + [ends.append(_FinalWeights()) or ends[-1]])

  def run(name, epochs, steps):
    config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / name), export_dir="",
                         epochs=epochs, steps_per_epoch=steps, batch_size=512, seed=5,
                         early_stop_patience=5, reduce_lr_factor=1.0, in_memory=in_memory)
    return training.train(tiny_model_config(), config, verbose=0)
  two = run("two", 2, 20)
  assert len(two.history["loss"]) == 2 and len(two.history["val_auc"]) == 2
  assert int(two.model.optimizer.iterations) == 40
  record = json.load(open(tmp_path / "two" / "training.json"))
  assert record["epochs_run"] == 2 and record["train_examples_per_second"] > 0
  run("one", 1, 40)
  for a, b in zip(*(end.weights for end in ends)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("in_memory, steps_per_epoch", [(False, 0), (True, 0), (False, 40)])
def test_a_resumed_run_is_the_run_an_interruption_never_hit(tiny_data, tmp_path, monkeypatch,
                                                            in_memory, steps_per_epoch):
  # With steps_per_epoch=40, over passes of 31 whole batches, the resumed run passes over one
  # pass and reads 9 batches of the next before it trains.
  config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / "run"), export_dir="",
                       epochs=3, batch_size=512, learning_rate=3e-3, early_stop_patience=5,
                       seed=5, in_memory=in_memory, steps_per_epoch=steps_per_epoch)
  whole = training.train(tiny_model_config(), dataclasses.replace(
      config, run_dir=str(tmp_path / "whole")), verbose=0)
  for_run = callbacks.for_run
  monkeypatch.setattr(callbacks, "for_run", lambda *a: for_run(*a) + [_Interrupt(1)])
  with pytest.raises(KeyboardInterrupt):
    training.train(tiny_model_config(), config, verbose=0)
  monkeypatch.setattr(callbacks, "for_run", for_run)
  state = json.load(open(tmp_path / "run" / "backup" / "callbacks.json"))
  assert state["epoch"] == 0 and state["history"]["val_auc"] == whole.history["val_auc"][:1]
  best = state["callbacks"][0]["best"]  # ModelCheckpoint's, epoch 1's mean validation AUC
  assert best == pytest.approx(whole.history["val_auc"][0])

  # Another architecture cannot resume it, and says so before writing anything.
  before = (tmp_path / "run" / "config.json").read_text()
  with pytest.raises(ConfigError, match=r"holds an interrupted run \(backup/\) of other settings "
                                        r"\(expert_hidden_units \[16\] -> \[32\]\)"):
    training.train(tiny_model_config(expert_hidden_units=(32,)), config, verbose=0)
  assert (tmp_path / "run" / "config.json").read_text() == before

  resumed = training.train(tiny_model_config(), config, verbose=0)
  assert len(resumed.history["val_auc"]) == 3            # epoch 1 from before, 2 and 3 now
  # The same weights, optimizer, counters and batch order: the run an interruption never hit.
  assert resumed.history == whole.history
  assert resumed.metrics == whole.metrics
  training_json = json.load(open(tmp_path / "run" / "training.json"))
  assert training_json["epochs_run"] == 3 and training_json["history"] == resumed.history
  # Its time is both sessions': the first epoch's before the interruption, and the two after.
  assert training_json["train_seconds"] > state["seconds"] > 0
  assert not (tmp_path / "run" / "backup").exists()


@pytest.mark.slow
def test_resuming_on_data_prepared_again_is_refused_and_with_no_epoch_left_keeps_the_history(
    tmp_path, monkeypatch):
  from data_prep.synthetic import prepare_synthetic
  data = str(tmp_path / "data")
  prepare_synthetic(data, rows=6000, seed=3, min_count=1)
  config = TrainConfig(data_dir=data, run_dir=str(tmp_path / "run"), export_dir="", epochs=2,
                       batch_size=512, seed=5)
  for_run = callbacks.for_run
  monkeypatch.setattr(callbacks, "for_run", lambda *a: for_run(*a) + [_Interrupt(1)])
  with pytest.raises(KeyboardInterrupt):
    training.train(tiny_model_config(), config, verbose=0)
  monkeypatch.setattr(callbacks, "for_run", for_run)
  first_epoch = json.load(open(tmp_path / "run" / "backup" / "callbacks.json"))["history"]

  # Prepared again with smaller vocabularies: the backed-up tables no longer fit.
  prepare_synthetic(data, rows=6000, seed=3, min_count=3, overwrite=True)
  with pytest.raises(ConfigError, match=r"of other settings \(features [a-z_, ]+: the data was "
                                        r"prepared again\)"):
    training.train(tiny_model_config(), config, verbose=0)

  prepare_synthetic(data, rows=6000, seed=3, min_count=1, overwrite=True)  # as it was
  done = training.train(tiny_model_config(), dataclasses.replace(config, epochs=1), verbose=0)
  assert done.history == first_epoch and len(done.history["loss"]) == 1  # no epoch was left
  training_json = json.load(open(tmp_path / "run" / "training.json"))
  # The epoch trained before the interruption, and its time: the rate is that session's.
  assert training_json["epochs_run"] == 1 and training_json["train_seconds"] > 0
  assert training_json["train_examples_per_second"] == pytest.approx(
      json.load(open(tmp_path / "data" / "stats.json"))["train"]["rows"]
      / training_json["train_seconds"])
  assert set(done.metrics) == {"valid", "test"} and not (tmp_path / "run" / "backup").exists()


@pytest.mark.slow
def test_an_epoch_s_logged_loss_is_the_mean_over_its_batches(tiny_data, tmp_path):
  # ~16,000 train rows in batches of 512: 31 full batches and a partial one. The tasks'
  # losses are Keras means over the epoch's examples; the epoch's loss (their weighted
  # sum: no embedding L2 here, and STEM has no auxiliary loss) must be the same mean,
  # not the last batch's.
  config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / "run"), export_dir="",
                       epochs=2, batch_size=512, seed=5, early_stop_patience=5)
  result = training.train(tiny_model_config(embedding_l2=0.0, loss_weights=(2.0, 1.0)),
                          config, verbose=0)
  history = json.load(open(tmp_path / "run" / "training.json"))["history"]
  assert history == result.history
  for epoch in range(2):
    mean = 2.0 * history["finish_loss"][epoch] + history["like_loss"][epoch]
    assert history["loss"][epoch] == pytest.approx(mean, rel=1e-5)
    assert history["total_loss"][epoch] == pytest.approx(mean, rel=1e-5)
    assert history["regularization_loss"][epoch] == 0.0


@pytest.mark.slow
def test_a_shard_damaged_in_place_stops_training_naming_the_shard(tiny_data, tmp_path):
  # A garbled record header keeps the shard's size (stats.json's check passes): TensorFlow's
  # reader stops with "corrupted record at N" and no file; the error names the shard.
  shutil.copytree(tiny_data, tmp_path / "data")
  shard = tmp_path / "data" / "train-00002-of-00008.tfrecord"
  content = bytearray(shard.read_bytes())
  second = 8 + 4 + struct.unpack("<Q", content[:8])[0] + 4  # the second record's header
  content[second + 2] ^= 0xFF
  shard.write_bytes(bytes(content))
  config = TrainConfig(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run"),
                       export_dir="", epochs=1, batch_size=512, seed=5)
  with pytest.raises(SchemaError, match=rf"shard .*/train-00002-of-00008\.tfrecord of split "
                                        rf"'train' is damaged: .*byte {second:,}"):
    training.train(tiny_model_config(), config, verbose=0)
