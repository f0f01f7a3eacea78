"""data_prep.writer: validation, vocabularies, split, shards, atomic output."""

import json
import os

import pandas as pd
import pytest
import tensorflow as tf

from data_prep.writer import Chunk, DataError, prepare
from stem_tfrs.schema import Schema


def frame(n=200, like=None):
  data = {"uid": [f"u{i % 7}" for i in range(n)], "item": [f"i{i % 3}" for i in range(n)],
          "finish": [i % 2 for i in range(n)], "like": like or [i % 5 == 0 for i in range(n)]}
  return pd.DataFrame(data)


def run(tmp_path, chunks, **kwargs):
  args = dict(features=["uid", "item"], labels=["finish", "like"], group_column="uid",
              out_dir=str(tmp_path / "out"), num_shards={"train": 3, "valid": 1, "test": 1})
  args.update(kwargs)
  return prepare(lambda: iter(chunks), **args)


def leftovers(tmp_path):
  return sorted(os.listdir(tmp_path))


def test_writes_schema_stats_vocab_and_all_rows(tmp_path):
  chunks = [Chunk(frame(), "a.csv", 2), Chunk(frame(100), "a.csv", 202)]
  stats = run(tmp_path, chunks)
  out = tmp_path / "out"
  schema = Schema.load(str(out))
  assert schema.tasks == ["finish", "like"] and schema.feature_names == ["uid", "item"]
  assert json.loads((out / "stats.json").read_text()) == stats
  assert sum(s["rows"] for s in stats.values()) == 300
  total = 0
  for split in ("train", "valid", "test"):
    n = sum(1 for _ in tf.data.TFRecordDataset(schema.shard_paths(split)))
    assert n == stats[split]["rows"]
    total += n
  assert total == 300
  assert 0.6 < stats["train"]["rows"] / 300 < 0.95
  # Most frequent first; ties in value order.
  assert (out / "vocab" / "item.txt").read_text().splitlines()[0] == "i0"
  assert leftovers(tmp_path) == ["out"]


def test_split_is_deterministic_by_seed(tmp_path):
  a = run(tmp_path, [Chunk(frame(1000), "x")], out_dir=str(tmp_path / "a"), seed=1)
  b = run(tmp_path, [Chunk(frame(1000), "x")], out_dir=str(tmp_path / "b"), seed=1)
  c = run(tmp_path, [Chunk(frame(1000), "x")], out_dir=str(tmp_path / "c"), seed=2)
  assert a == b and a != c


def test_min_count_sends_rare_values_to_oov(tmp_path):
  f = frame(100)
  f.loc[0, "item"] = "rare"
  run(tmp_path, [Chunk(f, "x")], min_count=2, seed=0, split=_all_train())
  vocab = (tmp_path / "out" / "vocab" / "item.txt").read_text().splitlines()
  assert "rare" not in vocab and set(vocab) == {"i0", "i1", "i2"}


def _all_train():
  from data_prep.writer import SplitFractions
  return SplitFractions(test=0.0, valid_of_rest=0.0)


def test_label_outside_0_1_names_column_file_and_line_and_writes_nothing(tmp_path):
  like = [0] * 200
  like[57] = 2
  with pytest.raises(DataError, match=r"column 'like' in a\.csv line 59: '2' is not 0 or 1"):
    run(tmp_path, [Chunk(frame(like=like), "a.csv", first_line=2)])
  assert leftovers(tmp_path) == []


def test_missing_column_is_named(tmp_path):
  with pytest.raises(DataError, match=r"b\.csv: missing column\(s\) \['like'\]"):
    run(tmp_path, [Chunk(frame().drop(columns=["like"]), "b.csv")])
  assert leftovers(tmp_path) == []


def test_empty_input_is_an_error(tmp_path):
  with pytest.raises(DataError, match="no rows"):
    run(tmp_path, [Chunk(frame(0), "empty.csv")])
  assert leftovers(tmp_path) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path):
  run(tmp_path, [Chunk(frame(), "x")])
  with pytest.raises(FileExistsError, match="--overwrite"):
    run(tmp_path, [Chunk(frame(50), "x")])
  stats = run(tmp_path, [Chunk(frame(50), "x")], overwrite=True)
  assert sum(s["rows"] for s in stats.values()) == 50
  assert leftovers(tmp_path) == ["out"]


def test_failure_in_second_pass_leaves_previous_data_set_intact(tmp_path):
  run(tmp_path, [Chunk(frame(), "x")])
  before = (tmp_path / "out" / "stats.json").read_text()
  calls = []

  def chunks():
    calls.append(1)
    yield Chunk(frame(), "x")
    if len(calls) == 2:
      raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    prepare(chunks, features=["uid", "item"], labels=["finish", "like"], group_column="uid",
            out_dir=str(tmp_path / "out"), overwrite=True)
  assert (tmp_path / "out" / "stats.json").read_text() == before
  assert leftovers(tmp_path) == ["out"]
