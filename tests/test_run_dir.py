"""What a run directory accepts and refuses: its config.json and its checkpoints never disagree.

`train` writes a run directory; a second `train` into it resumes an interrupted run of the same
settings, restarts one killed before its first backup, and refuses anything else in one line,
before anything is written. Every restore (export, evaluation, resume) restores every variable
of the model or refuses, naming the checkpoint; a damaged checkpoint or backup is one line too.
"""

import dataclasses
import glob
import json
import os
import shutil

import pytest

from stem_tfrs import TrainConfig, training
from stem_tfrs.training import callbacks
from stem_tfrs.config import ConfigError

from tests.support import TINY_MODEL_FLAGS, tiny_model_config
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error
from tests.test_training import _Interrupt


def snapshot(root):
  """{path relative to `root`: (content, mtime)} of every file under `root`."""
  found = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, root)] = (f.read(), os.stat(path).st_mtime_ns)
  return found


@pytest.fixture()
def run_copy(trained_run, tmp_path):
  """A copy of the finished tiny run (stem, TINY_MODEL_FLAGS, 2 epochs)."""
  copy = tmp_path / "run"
  shutil.copytree(trained_run.run_dir, copy)
  return copy


def export(run_dir, tmp_path):
  return run_here("export", f"--run_dir={run_dir}", f"--export_dir={tmp_path / 'export'}",
                  cwd=tmp_path)


# Defect 2: a restore must restore every variable of the model.

def test_export_refuses_a_checkpoint_that_its_config_json_does_not_describe(run_copy, tmp_path):
  config = json.loads((run_copy / "config.json").read_text())
  config["model_config"]["num_layers"] = 2  # a model with a second STEM layer
  (run_copy / "config.json").write_text(json.dumps(config))
  before = snapshot(run_copy)
  result = export(run_copy, tmp_path)
  assert_clean_error(result, rf"{run_copy}/checkpoints/best does not restore \d+ of the model's "
                             r"\d+ variables \(the first: stem/stem_layer_\d/")
  assert snapshot(run_copy) == before
  assert not glob.glob(str(tmp_path / "export" / "stem" / "*"))


# Defect 8: a damaged checkpoint is one line that names it.

@pytest.mark.parametrize("part, says", [("data-00000-of-00001", "Read less bytes"),
                                        ("index", "not an sstable")])
def test_export_of_a_truncated_checkpoint_is_one_line_naming_its_file(run_copy, tmp_path, part,
                                                                      says):
  damaged = run_copy / "checkpoints" / f"best.{part}"
  with open(damaged, "r+b") as f:
    f.truncate(os.path.getsize(damaged) // 2)
  before = snapshot(run_copy)
  result = export(run_copy, tmp_path)
  assert_clean_error(result, rf"checkpoint {run_copy}/checkpoints/best .*best\.{part}.* cannot "
                             rf"be read \({says}.*\): .*train the run again")
  assert snapshot(run_copy) == before
  assert not glob.glob(str(tmp_path / "export" / "stem" / "*"))


# Defect 3: a finished run directory is never overwritten.

def train_into(run_dir, data_dir, *extra):
  return run_here("train", f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--export_dir=",
                  "--epochs=1", "--batch_size=512", "--verbose=0", *TINY_MODEL_FLAGS, *extra,
                  cwd=os.path.dirname(run_dir))


@pytest.mark.parametrize("extra, message", [
    (["--model=mmoe"], r"holds a finished run of other settings \(model stem -> mmoe\): use "
                       r"another --run_dir"),
    ([], r"already holds a finished run \(metrics.json\); use another --run_dir"),
])
def test_train_refuses_a_finished_run_directory(run_copy, tiny_data, extra, message):
  before = snapshot(run_copy)
  result = train_into(run_copy, tiny_data, *extra)
  assert_clean_error(result, rf"{run_copy} {message}")
  assert snapshot(run_copy) == before


def test_train_refuses_checkpoints_without_a_config_json(run_copy, tiny_data):
  os.remove(run_copy / "config.json")
  before = snapshot(run_copy)
  result = train_into(run_copy, tiny_data)
  assert_clean_error(result, rf"{run_copy} holds checkpoints, metrics.json, training.json but no "
                             r"config.json: .*use another --run_dir")
  assert snapshot(run_copy) == before


@pytest.mark.slow
def test_a_run_killed_before_its_first_backup_is_refused_to_others_and_restarts_as_itself(
    tiny_data, tmp_path, monkeypatch):
  config = TrainConfig(data_dir=tiny_data, run_dir=str(tmp_path / "run"), export_dir="",
                       epochs=1, batch_size=512, seed=5)
  for_run = callbacks.for_run
  monkeypatch.setattr(callbacks, "for_run", lambda *a: for_run(*a) + [_Interrupt(0)])
  with pytest.raises(KeyboardInterrupt):
    training.train(tiny_model_config(), config, verbose=0)
  monkeypatch.setattr(callbacks, "for_run", for_run)
  assert (tmp_path / "run" / "config.json").exists()
  assert not (tmp_path / "run" / "backup").exists()
  before = snapshot(tmp_path / "run")
  with pytest.raises(ConfigError, match=r"holds a run of other settings \(embedding_dim 4 -> 8\) "
                                        r"that stopped before its first backup: use another "
                                        r"--run_dir"):
    training.train(tiny_model_config(embedding_dim=8), config, verbose=0)
  assert snapshot(tmp_path / "run") == before
  # Killed as it wrote its first backup: a part of it, no checkpoint file, no callbacks' state.
  (tmp_path / "run" / "backup" / "chief" / "ckpt-1_temp").mkdir(parents=True)
  (tmp_path / "run" / "backup" / "chief" / "ckpt-1_temp" / "part-00000").write_bytes(b"\0" * 99)
  done = training.train(tiny_model_config(), config, verbose=0)
  assert set(done.metrics) == {"valid", "test"}
  assert not (tmp_path / "run" / "backup").exists()


# Defect 8: a damaged backup is one line that says what to do; nothing is written.

@pytest.fixture(scope="module")
def interrupted_run(tiny_data, tmp_path_factory):
  """A tiny run interrupted as its second epoch began: backup/ holds epoch 1."""
  run_dir = tmp_path_factory.mktemp("interrupted") / "run"
  config = TrainConfig(data_dir=tiny_data, run_dir=str(run_dir), export_dir="", epochs=2,
                       batch_size=512, seed=5)
  for_run = callbacks.for_run
  callbacks.for_run = lambda *a: for_run(*a) + [_Interrupt(1)]
  try:
    with pytest.raises(KeyboardInterrupt):
      training.train(tiny_model_config(), config, verbose=0)
  finally:
    callbacks.for_run = for_run
  assert json.load(open(run_dir / "backup" / "callbacks.json"))["epoch"] == 0
  return run_dir


def garble(path):
  data = bytearray(open(path, "rb").read())
  for i in range(0, len(data), 7):
    data[i] ^= 0x5A
  open(path, "wb").write(bytes(data))


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("pattern, damage", [
    ("ckpt-*.data-00000-of-00001", truncate),
    ("ckpt-*.data-00000-of-00001", garble),
    ("ckpt-*.index", truncate),
    ("checkpoint", garble),
])
def test_resuming_from_a_damaged_backup_is_one_line_and_writes_nothing(
    interrupted_run, tiny_data, tmp_path, pattern, damage):
  run_dir = tmp_path / "run"
  shutil.copytree(interrupted_run, run_dir)
  (damaged,) = glob.glob(str(run_dir / "backup" / "chief" / pattern))
  damage(damaged)
  before = snapshot(run_dir)
  result = train_into(run_dir, tiny_data, "--epochs=2", "--seed=5")
  assert_clean_error(result, rf"{run_dir}/backup.* cannot be (read|resumed).*; remove "
                             rf"{run_dir}/backup to start the run over$")
  assert snapshot(run_dir) == before


def test_resuming_under_other_gradient_clipping_is_refused_and_writes_nothing(
    interrupted_run, tiny_data, tmp_path):
  run_dir = tmp_path / "run"
  shutil.copytree(interrupted_run, run_dir)
  before = snapshot(run_dir)
  result = train_into(run_dir, tiny_data, "--epochs=2", "--seed=5", "--gradient_clip_norm=0")
  assert_clean_error(result, rf"{run_dir} holds an interrupted run \(backup/\) of other settings "
                             r"\(gradient_clip_norm 10.0 -> 0.0\): resume it with its own, or "
                             r"use another --run_dir")
  assert snapshot(run_dir) == before
  # A run from before the setting existed did not clip: the default is refused too.
  config = json.loads((run_dir / "config.json").read_text())
  del config["train_config"]["gradient_clip_norm"]
  (run_dir / "config.json").write_text(json.dumps(config))
  before = snapshot(run_dir)
  result = train_into(run_dir, tiny_data, "--epochs=2", "--seed=5")
  assert_clean_error(result, r"of other settings \(gradient_clip_norm 0.0 -> 10.0\)")
  assert snapshot(run_dir) == before


def test_a_run_from_before_initialization_existed_ran_keras_initializers(
    interrupted_run, tiny_data, tmp_path):
  run_dir = tmp_path / "run"
  shutil.copytree(interrupted_run, run_dir)
  config = json.loads((run_dir / "config.json").read_text())
  del config["model_config"]["initialization"]
  (run_dir / "config.json").write_text(json.dumps(config))
  before = snapshot(run_dir)
  result = train_into(run_dir, tiny_data, "--epochs=2", "--seed=5", "--initialization=fuxictr")
  assert_clean_error(result, r"of other settings \(initialization keras -> fuxictr\)")
  assert snapshot(run_dir) == before


def test_a_backup_of_another_model_is_refused_naming_what_it_does_not_restore(
    interrupted_run, tiny_data, tmp_path):
  import tensorflow as tf
  from stem_tfrs import build_model
  from stem_tfrs.data.schema import Schema
  run_dir = tmp_path / "run"
  shutil.copytree(interrupted_run, run_dir)
  model = build_model("stem", Schema.load(tiny_data), tiny_model_config(num_layers=2))
  model.compile(optimizer=tf.keras.optimizers.Adam())
  with pytest.raises(ValueError, match=rf"{run_dir}/backup/chief/ckpt-\d+ does not restore \d+ "
                                       r"of the model's and its optimizer's \d+ variables "
                                       r"\(the first: stem/stem_layer_\d/.*; remove "
                                       rf"{run_dir}/backup to start the run over$"):
    callbacks.restore_backup(model, str(run_dir / "backup"))


# Defect 10: flags refused before anything runs, each named.

def test_an_export_dir_that_is_a_file_is_refused_before_training(tiny_data, tmp_path):
  (tmp_path / "exports").write_text("not a directory\n")
  result = run_here("train", f"--data_dir={tiny_data}", f"--run_dir={tmp_path / 'run'}",
                    f"--export_dir={tmp_path / 'exports'}", "--epochs=1", "--batch_size=512",
                    *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert_clean_error(result, rf"--export_dir={tmp_path / 'exports'}: {tmp_path / 'exports'} is "
                             r"a file, not a directory")
  assert not (tmp_path / "run").exists()
  assert (tmp_path / "exports").read_text() == "not a directory\n"


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_gradient_clip_norm_names_its_flag_and_value(tiny_data, tmp_path, value):
  result = run_here("train", f"--data_dir={tiny_data}", f"--run_dir={tmp_path / 'run'}",
                    f"--gradient_clip_norm={value}", "--epochs=1", *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert_clean_error(result, rf"--gradient_clip_norm must be a finite number >= 0 \(0: no "
                             rf"clipping\), got {float(value)}")
  assert not (tmp_path / "run").exists()


def test_a_negative_seed_names_its_flag(tiny_data, tmp_path):
  result = run_here("train", f"--data_dir={tiny_data}", f"--run_dir={tmp_path / 'run'}",
                    "--seed=-1", "--epochs=1", *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert_clean_error(result, r"--seed must be in \[0, 2\*\*32\), got -1")
  assert not (tmp_path / "run").exists()
