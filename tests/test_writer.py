"""data_prep.writer: validation, vocabularies, split, shards, atomic output."""

import json
import os

import numpy as np

import pandas as pd
import pytest
import tensorflow as tf

from data_prep.writer import BadRows, Chunk, DataError, ExactSplit, RandomSplit, prepare
from stem_tfrs.data import make_dataset, parse_records
from stem_tfrs.schema import Schema, SchemaError


def frame(n=200, like=None, first_line=1):
  data = {"uid": [f"u{i % 7}" for i in range(n)], "item": [f"i{i % 3}" for i in range(n)],
          "finish": [i % 2 for i in range(n)], "like": like or [int(i % 5 == 0) for i in range(n)]}
  return pd.DataFrame(data, index=range(first_line, first_line + n))


def run(tmp_path, chunks, **kwargs):
  args = dict(features=["uid", "item"], labels=["finish", "like"], group_column="uid",
              out_dir=str(tmp_path / "out"), num_shards={"train": 3, "valid": 1, "test": 1})
  args.update(kwargs)
  return prepare(lambda: iter(chunks), **args)


def leftovers(tmp_path):
  return sorted(os.listdir(tmp_path))


def test_writes_schema_stats_vocab_and_all_rows(tmp_path):
  chunks = [Chunk(frame(first_line=2), "a.csv"), Chunk(frame(100, first_line=202), "a.csv")]
  stats = run(tmp_path, chunks)
  out = tmp_path / "out"
  schema = Schema.load(str(out))
  assert schema.tasks == ["finish", "like"] and schema.feature_names == ["uid", "item"]
  assert json.loads((out / "stats.json").read_text()) == stats
  assert sum(s["rows"] for s in stats.values()) == 300
  total = 0
  for split in ("train", "valid", "test"):
    records = tf.data.TFRecordDataset(schema.shard_paths(split)).batch(1000)
    n = sum(len(parse_records(schema, r)["finish"]) for r in records)
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
  f.loc[1, "item"] = "rare"
  run(tmp_path, [Chunk(f, "x")], min_count=2, seed=0, split=_all_train())
  vocab = (tmp_path / "out" / "vocab" / "item.txt").read_text().splitlines()
  assert "rare" not in vocab and set(vocab) == {"i0", "i1", "i2"}


def _all_train():
  return RandomSplit(test=0.0, valid_of_rest=0.0)


def test_label_outside_0_1_names_column_file_and_line_and_writes_nothing(tmp_path):
  like = [0] * 200
  like[57] = 2
  with pytest.raises(DataError, match=r"label outside \{0, 1\}: a\.csv line 59: column 'like': "
                                      r"'2' is not 0 or 1"):
    run(tmp_path, [Chunk(frame(like=like, first_line=2), "a.csv")])
  assert leftovers(tmp_path) == []


def test_bad_labels_are_skipped_counted_and_reported_unless_strict(tmp_path):
  like = [0] * 100
  like[3], like[10], like[11] = 2, "x", -1
  bad = BadRows(strict=False)
  stats = run(tmp_path, [Chunk(frame(100, like=like), "b.csv")], bad_rows=bad)
  assert sum(s["rows"] for s in stats.values()) == 97
  assert bad.counts == {"label outside {0, 1}": 2, "unparsable number": 1}
  assert bad.examples["unparsable number"] == ["b.csv line 11: column 'like': 'x' is not 0 or 1"]
  report = json.loads((tmp_path / "out" / "bad_rows.json").read_text())
  assert report["total"] == 3 and report["by_kind"]["label outside {0, 1}"]["rows"] == 2


def test_missing_column_is_named(tmp_path):
  with pytest.raises(DataError, match=r"b\.csv: missing column\(s\) \['like'\]"):
    run(tmp_path, [Chunk(frame().drop(columns=["like"]), "b.csv")])
  assert leftovers(tmp_path) == []


def test_empty_input_is_an_error(tmp_path):
  with pytest.raises(DataError, match="no usable rows"):
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


@pytest.mark.parametrize("total", [9, 10, 11, 999, 1234])
def test_exact_split_sizes_match_train_test_split_twice(tmp_path, total):
  # scikit-learn: test = ceil(0.1 * N); valid = ceil(0.1 * (N - test)).
  import math
  test = math.ceil(0.1 * total)
  valid = math.ceil(0.1 * (total - test))
  chunks = [Chunk(frame(min(total, 500), first_line=1), "x")]
  if total > 500:
    chunks += [Chunk(frame(total - 500, first_line=501), "x")]
  stats = run(tmp_path, chunks, split=ExactSplit(), seed=42, out_dir=str(tmp_path / f"o{total}"))
  assert (stats["train"]["rows"], stats["valid"]["rows"], stats["test"]["rows"]) == (
      total - test - valid, valid, test)


@pytest.mark.parametrize("total,empty", [(1, "train and valid splits"), (2, "train split")])
def test_a_split_left_empty_is_an_error_naming_it_and_writes_nothing(tmp_path, total, empty):
  # scikit-learn's sizes: 1 row -> (0, 0, 1), 2 rows -> (0, 1, 1).
  assert ExactSplit().sizes(total)[0] == 0
  with pytest.raises(DataError, match=f"the {empty} would be empty: none of the {total} usable "
                                      r"rows falls in (them|it) under ExactSplit\(test=0.1"):
    run(tmp_path, [Chunk(frame(total), "x")], split=ExactSplit())
  assert leftovers(tmp_path) == []


def test_a_split_of_fraction_0_may_be_empty(tmp_path):
  stats = run(tmp_path, [Chunk(frame(50), "x")], split=RandomSplit(test=0.0, valid_of_rest=0.0))
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [50, 0, 0]


def test_a_column_name_serving_cannot_use_stops_before_anything_is_written(tmp_path):
  f = frame(50).rename(columns={"item": "item.id"})
  with pytest.raises(SchemaError, match=r"column name 'item.id' cannot name a SavedModel input"):
    run(tmp_path, [Chunk(f, "x")], features=["uid", "item.id"])
  assert leftovers(tmp_path) == []


def test_a_task_named_shared_stops_before_anything_is_written(tmp_path):
  f = frame(50).rename(columns={"like": "shared"})
  with pytest.raises(SchemaError, match=r"task name 'shared' is reserved: it names the shared "
                                        r"experts, gates and embedding table"):
    run(tmp_path, [Chunk(f, "x")], labels=["finish", "shared"])
  assert leftovers(tmp_path) == []


def test_exact_split_is_seeded_and_uniform():
  split = ExactSplit()

  def draw(seed):
    assign = split.assigner(10_000, seed)
    return np.concatenate([assign(pd.DataFrame(index=range(n))) for n in (3000, 7000)])

  a, b = draw(1), draw(1)
  assert (a == b).all() and not (a == draw(2)).all()
  assert (a == 2).sum() == 1000 and (a == 1).sum() == 900
  assert abs((a[:3000] == 2).mean() - 0.1) < 0.03  # test rows spread over both chunks


def test_empty_values_are_missing_and_stay_out_of_the_vocabulary(tmp_path):
  f = frame(50)
  f["item"] = ["", "i1"] * 25
  run(tmp_path, [Chunk(f, "x")], split=_all_train())
  assert (tmp_path / "out" / "vocab" / "item.txt").read_text() == "i1\n"


def test_block_records_hold_consecutive_rows_of_a_shard_column_by_column(tmp_path):
  f = frame(100)
  f["tags"] = [("a|b" if i % 3 == 0 else "c" if i % 3 == 1 else "") for i in range(100)]
  chunks = [Chunk(f.iloc[:40], "x"), Chunk(f.iloc[40:], "x")]  # blocks span chunks
  kwargs = dict(features=["uid", "item", "tags"], multivalent={"tags": "|"}, split=_all_train(),
                num_shards={"train": 2, "valid": 1, "test": 1})
  run(tmp_path, chunks, out_dir=str(tmp_path / "rows"), rows_per_record=1, **kwargs)
  run(tmp_path, chunks, out_dir=str(tmp_path / "blocks"), rows_per_record=3, **kwargs)
  blocks = Schema.load(str(tmp_path / "blocks"))
  assert blocks.rows_per_record == 3 and Schema.load(str(tmp_path / "rows")).rows_per_record == 1
  first = tf.train.Example.FromString(
      next(iter(tf.data.TFRecordDataset(blocks.shard_paths("train")[0]))).numpy()).features.feature
  # shard 0 holds rows 0, 2, 4 first: tags "a|b", "", "c"
  assert list(first["uid"].bytes_list.value) == [b"u0", b"u2", b"u4"]
  assert list(first["tags"].bytes_list.value) == [b"a", b"b", b"c"]
  assert list(first["tags#row_lengths"].int64_list.value) == [2, 0, 1]
  assert list(first["finish"].int64_list.value) == [0, 0, 0]
  shards = [Schema.load(str(tmp_path / name)).shard_paths("train") for name in ("rows", "blocks")]
  assert [len(list(tf.data.TFRecordDataset(p))) for p in shards[1]] == [17, 17]  # 16x3 + 2 rows
  read = [parse_records(Schema.load(str(tmp_path / name)), next(iter(
      tf.data.TFRecordDataset(p).batch(1000)))) for name, p in zip(("rows", "blocks"), shards)]
  for column in ("uid", "item", "finish", "like"):
    assert (read[0][column].numpy() == read[1][column].numpy()).all()
  assert read[0]["tags"].to_list() == read[1]["tags"].to_list()
  # through the training pipeline: shuffled, padded lists, the same rows from both layouts
  def rows(name):
    schema = Schema.load(str(tmp_path / name))
    out = []
    for features, labels in make_dataset(schema, "train", 7, shuffle=True, seed=1,
                                          shuffle_buffer=10):
      tags = [tuple(t for t in row if t) for row in features["tags"].numpy().tolist()]
      out.extend(zip(features["uid"].numpy().tolist(), tags, labels["like"].numpy().tolist()))
    return out
  assert sorted(rows("rows")) == sorted(rows("blocks")) and len(rows("blocks")) == 100
  with pytest.raises(ValueError, match="rows_per_record must be >= 1"):
    run(tmp_path, chunks, out_dir=str(tmp_path / "none"), rows_per_record=0, **kwargs)


def test_temporary_siblings_of_dead_runs_are_removed_and_those_of_live_runs_kept(tmp_path):
  import socket
  import subprocess
  host = socket.gethostname()
  dead = subprocess.Popen(["sleep", "0"])
  dead.wait()
  live = subprocess.Popen(["sleep", "60"])
  try:
    names = {kind: {pid: f".out.{kind}-{host}-{pid}-abc123" for pid in (dead.pid, live.pid)}
             for kind in ("tmp", "old")}
    for by_pid in names.values():
      for name in by_pid.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "train-00000-of-00001.tfrecord").write_bytes(b"x" * 1000)
    seen = []

    def chunks():  # the second pass sees the run's own temporary directory
      seen.append(sorted(os.listdir(tmp_path)))
      yield Chunk(frame(), "x")

    prepare(chunks, features=["uid", "item"], labels=["finish", "like"], group_column="uid",
            out_dir=str(tmp_path / "out"))
    assert leftovers(tmp_path) == sorted(["out", names["tmp"][live.pid], names["old"][live.pid]])
    own = [n for n in seen[1] if n.startswith(".out.tmp-") and n != names["tmp"][live.pid]]
    assert len(own) == 1 and own[0].startswith(f".out.tmp-{host}-{os.getpid()}-"), seen[1]
  finally:
    live.kill()
    live.wait()


def test_the_first_bad_row_reported_is_the_earliest_line_whichever_column_holds_it(tmp_path):
  finish = [i % 2 for i in range(100)]
  like = [0] * 100
  finish[40], like[7] = 5, 3  # lines 41 and 8: the like column's is the earlier
  f = frame(100)
  f["finish"], f["like"] = finish, like
  bad = BadRows(strict=False)
  run(tmp_path, [Chunk(f, "b.csv")], bad_rows=bad)
  assert bad.examples["label outside {0, 1}"] == [
      "b.csv line 8: column 'like': '3' is not 0 or 1",
      "b.csv line 41: column 'finish': '5' is not 0 or 1"]
  assert bad.first() == "label outside {0, 1}: b.csv line 8: column 'like': '3' is not 0 or 1"
  with pytest.raises(DataError, match="b.csv line 8: "):
    run(tmp_path, [Chunk(f, "b.csv")], out_dir=str(tmp_path / "strict"))


def test_examples_of_a_kind_are_the_earliest_lines_whoever_reports_them():
  bad = BadRows()
  for line in (30, 10, 20, 50, 40, 60, 5):
    bad.add("unparsable number", "b.csv", line, "x")
  bad.add("unparsable number", "a.csv", 1, "x")  # a later file: after every line of b.csv
  assert bad.examples["unparsable number"] == [f"b.csv line {n}: x" for n in (5, 10, 20, 30, 40)]
  assert bad.counts["unparsable number"] == 8
