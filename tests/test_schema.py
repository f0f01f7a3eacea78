"""stem_tfrs.data.schema: round trip and the errors a user meets."""

import json
import re

import pytest

from stem_tfrs.data.schema import CategoricalFeature, Schema, SchemaError


def test_round_trip(tmp_path):
  (tmp_path / "vocab").mkdir()
  (tmp_path / "vocab" / "uid.txt").write_text("a\nb\n")
  schema = Schema([CategoricalFeature("uid", vocabulary_file="vocab/uid.txt", vocabulary_size=2),
                   CategoricalFeature("device", hash_buckets=100)],
                  labels=["click", "like"], group_column="uid",
                  splits={"train": ["train-0.tfrecord"]}, directory=str(tmp_path))
  schema.save(str(tmp_path))
  loaded = Schema.load(str(tmp_path))
  assert loaded.to_json() == schema.to_json()
  assert loaded.shard_paths("train") == [str(tmp_path / "train-0.tfrecord")]
  assert [f.num_rows for f in loaded.features] == [3, 100]


def test_missing_schema_says_how_to_make_one(tmp_path):
  with pytest.raises(SchemaError, match=r"no schema.json in data directory .*data_prep"):
    Schema.load(str(tmp_path))


def test_missing_vocabulary_file_is_named(tmp_path):
  (tmp_path / "schema.json").write_text(json.dumps({
      "features": [{"name": "uid", "vocabulary_file": "vocab/uid.txt", "vocabulary_size": 2}],
      "labels": ["click"]}))
  with pytest.raises(SchemaError, match="vocabulary file 'vocab/uid.txt' of feature 'uid'"):
    Schema.load(str(tmp_path))


@pytest.mark.parametrize("kwargs, message", [
    (dict(features=[], labels=["a"]), "no features"),
    (dict(features=[CategoricalFeature("x", hash_buckets=2)], labels=[]), "no labels"),
    (dict(features=[CategoricalFeature("x", hash_buckets=2)], labels=["x"]), "twice"),
    (dict(features=[CategoricalFeature("x", hash_buckets=2)], labels=["a"], group_column="u"),
     "group_column 'u'"),
    (dict(features=[CategoricalFeature("x", hash_buckets=2)], labels=["a", "shared"]),
     "task name 'shared' is reserved"),
])
def test_inconsistent_schemas_are_rejected(kwargs, message):
  with pytest.raises(SchemaError, match=message):
    Schema(**kwargs)


@pytest.mark.parametrize("name", ["item.id", "_uid", "user id", "user:id", "类别", "9lives",
                                  "tags#row_lengths", ""])
def test_a_column_name_that_cannot_name_a_serving_input_is_rejected(name):
  message = rf"column name {re.escape(repr(name))} cannot name a SavedModel input"
  with pytest.raises(SchemaError, match=message):
    Schema(features=[CategoricalFeature(name, hash_buckets=2)], labels=["click"])
  with pytest.raises(SchemaError, match=message):
    Schema(features=[CategoricalFeature("uid", hash_buckets=2)], labels=[name])
  Schema(features=[CategoricalFeature("User_ID2", hash_buckets=2)], labels=["is_click"])


def test_feature_needs_exactly_one_of_vocabulary_and_hashing():
  with pytest.raises(SchemaError, match="exactly one"):
    CategoricalFeature("x")
  with pytest.raises(SchemaError, match="exactly one"):
    CategoricalFeature("x", vocabulary_file="v.txt", hash_buckets=3)
  with pytest.raises(SchemaError, match="dtype 'float'"):
    CategoricalFeature("x", dtype="float", hash_buckets=3)


def schema_naming(tmp_path, vocabulary_file="vocab/uid.txt", shard="train-0.tfrecord"):
  """A data directory `tmp_path/data` whose schema.json names these paths."""
  data = tmp_path / "data"
  (data / "vocab").mkdir(parents=True)
  (data / "vocab" / "uid.txt").write_text("a\nb\n")
  (tmp_path / "outside.txt").write_text("root:x:0:0\n")
  (data / "schema.json").write_text(json.dumps({
      "features": [{"name": "uid", "vocabulary_file": vocabulary_file, "vocabulary_size": 2}],
      "labels": ["click"], "splits": {"train": [shard]}}))
  return data


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_a_vocabulary_file_outside_the_data_directory_is_refused(tmp_path, where):
  outside = tmp_path / "outside.txt"
  name = {"absolute": str(outside), "parent": "../outside.txt", "symlink": "vocab/link.txt"}[where]
  data = schema_naming(tmp_path, vocabulary_file=name)
  (data / "vocab" / "link.txt").symlink_to(outside)
  with pytest.raises(SchemaError) as error:
    Schema.load(str(data))
  message = str(error.value)
  assert str(data / "schema.json") in message and "feature 'uid'" in message
  assert re.search(rf"'{re.escape(name)}'.*outside the data directory", message), message


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_a_shard_outside_the_data_directory_is_refused(tmp_path, where):
  outside = tmp_path / "outside.txt"
  name = {"absolute": str(outside), "parent": "../outside.txt", "symlink": "link.tfrecord"}[where]
  data = schema_naming(tmp_path, shard=name)
  (data / "link.tfrecord").symlink_to(outside)
  with pytest.raises(SchemaError) as error:
    Schema.load(str(data))
  message = str(error.value)
  assert str(data / "schema.json") in message and "split 'train'" in message
  assert re.search(rf"'{re.escape(name)}'.*outside the data directory", message), message


def test_paths_inside_the_data_directory_load_through_a_symlinked_directory(tmp_path):
  data = schema_naming(tmp_path)
  (tmp_path / "alias").symlink_to(data)
  assert Schema.load(str(tmp_path / "alias")).features[0].vocabulary_file == "vocab/uid.txt"
