"""`python main.py train` as a user runs it: the default path, and bad input that must fail cleanly."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from stem_tfrs.data.schema import Schema

from tests.support import REPO, TINY_MODEL_FLAGS
from tests.test_pipeline import good_row, write_shard


def main_py(*args, cwd):
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args],
                        capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_clean_error(result, pattern):
  """Non-zero exit, no traceback, and the last stderr line is one 'error: ...' line."""
  assert result.returncode != 0, result.stdout[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), result.stderr[-3000:]
  assert re.search(pattern, last), last


@pytest.mark.slow
def test_train_with_default_data_prepares_trains_evaluates_and_exports(tmp_path):
  (tmp_path / "tiny.flags").write_text("\n".join(TINY_MODEL_FLAGS) + "\n")
  result = main_py("train", "--synthetic_rows=20000", "--epochs=1", "--batch_size=256",
                   "--verbose=2", "--flagfile=tiny.flags", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  # Our INFO lines, not TensorFlow's (saver timings, untraced functions, fingerprints).
  assert re.search(r"\] exported .*saved_models/stem/\d+", result.stderr)
  assert not re.search(r"(functional_saver|save|fingerprinting_utils|signature_serialization)"
                       r"\.py:\d+\]", result.stdout + result.stderr)
  assert os.path.isfile(tmp_path / "data" / "synthetic" / "schema.json")
  table = [line.split() for line in result.stdout.splitlines()]
  assert ["split", "task", "logloss", "AUC", "gAUC"] in table
  assert {tuple(row[:2]) for row in table if row[:1] == ["test"]} == {("test", "finish"),
                                                                      ("test", "like")}
  runs = glob.glob(str(tmp_path / "runs" / "stem-*"))
  assert len(runs) == 1
  metrics = json.load(open(os.path.join(runs[0], "metrics.json")))
  assert set(metrics["test"]) == {"finish", "like"}
  config = json.load(open(os.path.join(runs[0], "config.json")))
  assert config["model_config"]["expert_hidden_units"] == [16]  # read from the flagfile
  exports = os.listdir(tmp_path / "saved_models" / "stem")
  assert len(exports) == 1 and exports[0].isdigit()
  assert os.path.isfile(tmp_path / "saved_models" / "stem" / exports[0] / "saved_model.pb")


@pytest.fixture()
def data_copy(tiny_data, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  return data


def assert_nothing_written(tmp_path):
  assert not glob.glob(str(tmp_path / "run" / "metrics.json"))
  assert not os.path.exists(tmp_path / "export" / "stem")


def run_train(tmp_path, data_dir, *extra):
  return main_py("train", f"--data_dir={data_dir}", f"--run_dir={tmp_path / 'run'}",
                 f"--export_dir={tmp_path / 'export'}", "--epochs=1", *TINY_MODEL_FLAGS,
                 *extra, cwd=tmp_path)


@pytest.mark.slow
def test_unknown_model_is_one_line(tmp_path, data_copy):
  result = run_train(tmp_path, data_copy, "--model=nope")
  assert_clean_error(result, r"--model=nope: value should be one of <stem\|single_task\|shared_bottom")
  assert not os.path.exists(tmp_path / "run")
  assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_data_dir_without_schema_is_one_line(tmp_path):
  (tmp_path / "empty").mkdir()
  result = run_train(tmp_path, tmp_path / "empty")
  assert_clean_error(result, r"no schema.json in data directory .*empty")
  assert not os.path.exists(tmp_path / "run")
  assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_schema_column_missing_from_shards_is_one_line(tmp_path, data_copy):
  schema = json.load(open(data_copy / "schema.json"))
  schema["features"].append({"name": "region", "dtype": "string", "hash_buckets": 10})
  json.dump(schema, open(data_copy / "schema.json", "w"))
  result = run_train(tmp_path, data_copy)
  assert_clean_error(result, r"column 'region' named in schema.json is missing from shard "
                             r".*train-00000-of-00008.tfrecord")
  assert not os.path.exists(tmp_path / "run")
  assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_label_not_binary_in_shards_is_one_line_and_nothing_is_exported(tmp_path, data_copy):
  schema = Schema.load(str(data_copy))
  for path in schema.shard_paths("train"):
    os.remove(path)
  write_shard(data_copy / "train-00000-of-00008.tfrecord",
              [good_row()] * 300 + [good_row(like=3)] + [good_row()] * 300)
  schema.splits["train"] = ["train-00000-of-00008.tfrecord"]
  schema.save(str(data_copy))
  stats = json.loads((data_copy / "stats.json").read_text())  # the shard's size, as data_prep
  stats["train"]["shard_bytes"] = {                            # records those it writes
      "train-00000-of-00008.tfrecord": os.path.getsize(data_copy / "train-00000-of-00008.tfrecord")}
  (data_copy / "stats.json").write_text(json.dumps(stats))
  result = run_train(tmp_path, data_copy, "--batch_size=64")
  assert_clean_error(result, r"label like in split train must be 0 or 1")
  assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_bad_list_flag_is_one_line(tmp_path, data_copy):
  result = run_train(tmp_path, data_copy, "--expert_hidden_units=64,x")
  assert_clean_error(result, r"--expert_hidden_units must be comma-separated integers")
  assert not os.path.exists(tmp_path / "run")
