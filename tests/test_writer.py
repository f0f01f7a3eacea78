"""data_prep.writer: validation, vocabularies, split, shards, atomic output."""

import json
import os

import numpy as np

import pandas as pd
import pyarrow as pa
import pytest
import tensorflow as tf

from data_prep import writer
from data_prep.logs import prepare_logs
from data_prep.readers import read_blocks
from data_prep.writer import (BadRows, Chunk, DataError, ExactSplit, RandomSplit, SplitRows,
                              prepare)
from stem_tfrs.data.pipeline import make_dataset
from stem_tfrs.data.records import parse_records
from stem_tfrs.data.schema import Schema, SchemaError


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


@pytest.mark.parametrize("split", [RandomSplit(), ExactSplit()], ids=["random", "exact"])
def test_failure_while_reading_leaves_previous_data_set_intact(tmp_path, split):
  run(tmp_path, [Chunk(frame(), "x")])
  before = (tmp_path / "out" / "stats.json").read_text()
  calls = []

  def chunks():  # read once, whatever the split
    calls.append(1)
    yield Chunk(frame(), "x")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    prepare(chunks, features=["uid", "item"], labels=["finish", "like"], group_column="uid",
            out_dir=str(tmp_path / "out"), overwrite=True, split=split)
  assert calls == [1]
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


def test_exact_split_is_seeded_and_uniform_and_ignores_the_blocks(monkeypatch):
  monkeypatch.setattr(writer, "GROUP_ROWS", 1000)
  split = ExactSplit()
  ordinals = np.arange(1, 10_001)

  def draw(seed, cuts):
    plan = split.plan({(g, 0): n for g, n in enumerate([999] + [1000] * 9 + [1])}, seed)
    return np.concatenate([
        plan.assign(SplitRows(pa.table({"x": pa.array([""] * (b - a))}), 0, ordinals[a:b],
                              np.zeros(b - a))) for a, b in zip(cuts[:-1], cuts[1:])])

  a, b = draw(1, [0, 3000, 10_000]), draw(1, [0, 1, 2500, 2501, 9999, 10_000])
  assert (a == b).all() and not (a == draw(2, [0, 10_000])).all()
  assert (a == 2).sum() == 1000 and (a == 1).sum() == 900
  assert abs((a[:3000] == 2).mean() - 0.1) < 0.03  # test rows spread over the groups


def test_empty_values_are_missing_and_stay_out_of_the_vocabulary(tmp_path):
  f = frame(50)
  f["item"] = ["", "i1"] * 25
  run(tmp_path, [Chunk(f, "x")], split=_all_train())
  assert (tmp_path / "out" / "vocab" / "item.txt").read_text() == "i1\n"


def test_block_records_hold_consecutive_rows_of_a_shard_column_by_column(tmp_path):
  f = frame(100)
  f["tags"] = [("a|b" if i % 3 == 0 else "c" if i % 3 == 1 else "") for i in range(100)]
  f["line"] = [str(line) for line in f.index]
  chunks = [Chunk(f.iloc[:40], "x"), Chunk(f.iloc[40:], "x")]  # blocks span chunks
  kwargs = dict(features=["uid", "item", "tags", "line"], multivalent={"tags": "|"},
                split=_all_train(), num_shards={"train": 2, "valid": 1, "test": 1})
  run(tmp_path, chunks, out_dir=str(tmp_path / "rows"), rows_per_record=1, **kwargs)
  run(tmp_path, chunks, out_dir=str(tmp_path / "blocks"), rows_per_record=3, **kwargs)
  blocks = Schema.load(str(tmp_path / "blocks"))
  assert blocks.rows_per_record == 3 and Schema.load(str(tmp_path / "rows")).rows_per_record == 1
  shards = [Schema.load(str(tmp_path / name)).shard_paths("train") for name in ("rows", "blocks")]
  for one, three in zip(*shards):
    rows = [tf.train.Example.FromString(r.numpy()).features.feature
            for r in tf.data.TFRecordDataset(one)]
    records = [tf.train.Example.FromString(r.numpy()).features.feature
               for r in tf.data.TFRecordDataset(three)]
    lines = [int(r["line"].bytes_list.value[0]) for r in rows]
    assert lines == sorted(lines)  # a shard's rows in line order
    assert len(records) == -(-len(rows) // 3)  # full records, the last one the rest
    for k, record in enumerate(records):  # record k: the shard's rows 3k, 3k + 1, 3k + 2
      taken = rows[3 * k:3 * k + 3]
      for column in ("uid", "line"):
        assert list(record[column].bytes_list.value) == [
            r[column].bytes_list.value[0] for r in taken]
      assert list(record["tags"].bytes_list.value) == [
          v for r in taken for v in r["tags"].bytes_list.value]
      assert list(record["tags#row_lengths"].int64_list.value) == [
          len(r["tags"].bytes_list.value) for r in taken]
      assert list(record["finish"].int64_list.value) == [
          r["finish"].int64_list.value[0] for r in taken]
  assert sum(len(list(tf.data.TFRecordDataset(p))) for p in shards[0]) == 100
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

    def chunks():  # the pass that writes sees the run's own temporary directory
      seen.append(sorted(os.listdir(tmp_path)))
      yield Chunk(frame(), "x")

    prepare(chunks, features=["uid", "item"], labels=["finish", "like"], group_column="uid",
            out_dir=str(tmp_path / "out"))
    assert leftovers(tmp_path) == sorted(["out", names["tmp"][live.pid], names["old"][live.pid]])
    own = [n for n in seen[-1] if n.startswith(".out.tmp-") and n != names["tmp"][live.pid]]
    assert len(own) == 1 and own[0].startswith(f".out.tmp-{host}-{os.getpid()}-"), seen[-1]
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


# The vocabularies and split sizes of the writer before issue 25 (row by row, pandas), frozen
# from its run on `write_vocab_file`'s file: with a split by date the train rows are fixed, so
# the train-only vocabularies must be the same; ExactSplit's sizes depend on the row count only.
def write_vocab_file(path, rows=600, seed=7):
  """Logs with a day column (a split by date), skewed ids with ties, non-ASCII values, a bad
  label and lists: the file the vocabularies were frozen from (by the writer before #25)."""
  rng = np.random.default_rng(seed)
  items = ["é", "e", "Z", "z", "日本", "ä", "a", "éa", "i0", "i1", "i10", "i2"]
  lines = ["user_id,item_id,tags,day,click"]
  for n in range(rows):
    user = f"u{int(rng.zipf(1.5)) % 40}"
    item = items[int(rng.integers(0, len(items)))] if rng.random() < 0.7 else f"x{n % 50}"
    tags = "|".join(rng.choice(["α", "b", "B", "ß", ""], int(rng.integers(0, 3))))
    day = ["20240101", "20240102", "20240103", "20240104"][int(rng.integers(0, 4))]
    click = "2" if n == 77 else str(int(rng.random() < 0.4))
    lines.append(f"{user},{item},{tags},{day},{click}")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


FROZEN_VOCABULARIES = {
    "user_id": ["u1", "u2", "u3", "u5", "u4", "u6", "u8", "u9", "u16", "u10", "u12", "u14", "u11",
        "u19", "u29", "u7", "u13", "u24", "u0", "u15", "u21", "u26", "u32", "u35"],
    "item_id": ["Z", "z", "日本", "i2", "ä", "e", "éa", "a", "i10", "i0", "i1", "é", "x14", "x43",
        "x0", "x31", "x39", "x46", "x20", "x24", "x29", "x33", "x5", "x8", "x1", "x11", "x18",
        "x22", "x25", "x26", "x34", "x38", "x40", "x42", "x44", "x45", "x47", "x48", "x49", "x6",
        "x7"],
    "tags": ["ß", "b", "B", "α"],
}
FROZEN_DATE_SPLIT_ROWS = {"train": 298, "valid": 154, "test": 147}
FROZEN_EXACT_SPLIT_ROWS = {"train": 485, "valid": 54, "test": 60}


def vocabularies(out):
  return {name: (out / "vocab" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
          for name in ("user_id", "item_id", "tags")}


@pytest.mark.parametrize("processes", [1, 2])
def test_vocabularies_on_a_date_split_equal_the_earlier_writers(tmp_path, processes):
  write_vocab_file(tmp_path / "logs.csv")
  stats = prepare_logs(str(tmp_path / "logs.csv"), str(tmp_path / "out"),
                       features=["user_id", "item_id", "tags"], tasks=["click"],
                       multivalent={"tags": "|"}, split_column="day", valid_from="20240103",
                       test_from="20240104", min_count=2, processes=processes, block_bytes=700)
  assert vocabularies(tmp_path / "out") == FROZEN_VOCABULARIES
  assert {s: v["rows"] for s, v in stats.items()} == FROZEN_DATE_SPLIT_ROWS
  # Ties in the order of Python's strings, which is the UTF-8 bytes' order pyarrow sorts by.
  items = FROZEN_VOCABULARIES["item_id"]
  counts = pd.read_csv(tmp_path / "logs.csv", dtype=str, keep_default_na=False)
  counts = counts[(counts["day"] < "20240103") & (counts["click"] != "2")]["item_id"]
  counts = counts.value_counts().to_dict()
  assert items == sorted(items, key=lambda v: (-counts[v], v))
  assert sorted(items) == sorted(items, key=lambda v: v.encode("utf-8"))
  assert {"é", "日本", "ä"} <= set(items)


def test_exact_split_sizes_equal_the_earlier_writers(tmp_path):
  write_vocab_file(tmp_path / "logs.csv")
  stats = prepare(lambda: read_blocks(str(tmp_path / "logs.csv"), sep=",", bad_rows=BadRows(),
                                      block_bytes=500),
                  features=["user_id", "item_id"], labels=["click"], group_column="user_id",
                  out_dir=str(tmp_path / "out"), split=ExactSplit(0.1, 0.1), bad_rows=BadRows())
  assert {s: v["rows"] for s, v in stats.items()} == FROZEN_EXACT_SPLIT_ROWS


def data_set(out):
  """Every file of a prepared data set: relative path -> bytes."""
  return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def rows_by_split(out):
  """Each split's rows, read back through the project's parser, sorted."""
  schema = Schema.load(str(out))
  rows = {}
  for split in ("train", "valid", "test"):
    rows[split] = []
    for shard in schema.shard_paths(split):
      for batch in tf.data.TFRecordDataset(shard).batch(1000):
        parsed = parse_records(schema, batch)
        rows[split].extend(zip(*[parsed[n].numpy().tolist() if n != "tags"
                                 else [tuple(t) for t in parsed[n].to_list()]
                                 for n in ("user_id", "item_id", "tags", "num", "click")]))
    rows[split].sort(key=repr)
  return rows


@pytest.mark.slow
@pytest.mark.parametrize("split", ["random", "exact", "date"])
def test_the_data_set_is_the_same_for_any_block_size_and_processes(tmp_path, monkeypatch, split):
  monkeypatch.setattr(writer, "GROUP_ROWS", 128)  # ExactSplit's groups: several per file
  raw = tmp_path / "raw"
  raw.mkdir()
  for part in range(2):
    write_vocab_file(raw / f"part-{part}.csv", rows=700, seed=part)
    text = (raw / f"part-{part}.csv").read_text(encoding="utf-8").splitlines()
    text = [text[0] + ",num"] + [f"{line},{n % 17 * 0.5}" for n, line in enumerate(text[1:])]
    (raw / f"part-{part}.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
  splits = {"random": RandomSplit(), "exact": ExactSplit(),
            "date": writer_split_by_day()}
  outputs = []
  for processes, block_bytes in [(1, 1 << 20), (2, 1 << 20), (1, 333), (2, 1000)]:
    out = tmp_path / f"out-{processes}-{block_bytes}"
    bad = BadRows()
    prepare(lambda: read_blocks(str(raw), sep=",", bad_rows=bad, block_bytes=block_bytes),
            features=["user_id", "item_id", "tags"], labels=["click"], group_column="user_id",
            out_dir=str(out), split=splits[split], bad_rows=bad, multivalent={"tags": "|"},
            numeric=["num"], rows_per_record=5, processes=processes, seed=3,
            num_shards={"train": 3, "valid": 2, "test": 1})
    outputs.append(out)
  first = data_set(outputs[0])
  assert json.loads(first["bad_rows.json"])["total"] == 2  # the bad label of each file
  rows = rows_by_split(outputs[0])
  assert sum(len(r) for r in rows.values()) == 1398
  for out in outputs[1:]:
    assert rows_by_split(out) == rows
    assert data_set(out) == first  # shards byte for byte, stats.json, schema.json, vocab


def writer_split_by_day():
  from data_prep.logs import TimeSplit
  return TimeSplit("day", "20240103", "20240104")


def test_the_same_rows_as_chunks_of_any_size_make_the_same_data_set(tmp_path):
  f = frame(500)
  f["tags"] = [("a|b" if i % 3 == 0 else "c" if i % 3 == 1 else "") for i in range(500)]
  outputs = []
  for sizes, processes in [((500,), 1), ((1, 99, 400), 2), ((250, 250), 2)]:
    cuts = np.cumsum((0,) + sizes)
    chunks = [Chunk(f.iloc[a:b], "x") for a, b in zip(cuts[:-1], cuts[1:])]
    out = tmp_path / f"out-{len(sizes)}-{processes}"
    run(tmp_path, chunks, out_dir=str(out), features=["uid", "item", "tags"],
        multivalent={"tags": "|"}, rows_per_record=4, processes=processes, split=ExactSplit())
    outputs.append(data_set(out))
  assert outputs[0] == outputs[1] == outputs[2]


def test_processes_must_be_a_positive_integer(tmp_path):
  with pytest.raises(ValueError, match="processes must be a positive integer, got 0"):
    run(tmp_path, [Chunk(frame(), "x")], processes=0)


def test_a_frames_labels_may_be_booleans_ints_floats_or_text(tmp_path):
  f = frame(60)
  f["finish"] = [bool(i % 2) for i in range(60)]
  f["like"] = [[1.0, 0.0, "1", "0.0", 1][i % 5] for i in range(60)]
  stats = run(tmp_path, [Chunk(f, "x")], split=_all_train())
  assert stats["train"]["rows"] == 60
  assert stats["train"]["positive_rate"] == {"finish": 0.5, "like": 0.6}


def cut_into_parts(lines, header, directory, cuts):
  """`lines` (a file's data lines) cut at `cuts` into gzip'd part files, each with `header`."""
  import gzip
  directory.mkdir()
  bounds = [0, *cuts, len(lines)]
  for part, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
    text = "".join(line + "\n" for line in ([header] if header else []) + lines[a:b])
    (directory / f"part-{part:05d}.gz").write_bytes(gzip.compress(text.encode("utf-8")))


def as_parquet(path, directory, *, sep, columns, cuts):
  """The delimited file `path` as a directory of Parquet files, its rows cut at `cuts`."""
  import pyarrow.csv as csv
  import pyarrow.parquet as pq
  table = csv.read_csv(
      path, read_options=csv.ReadOptions(column_names=columns),
      parse_options=csv.ParseOptions(delimiter=sep),
      convert_options=csv.ConvertOptions(column_types={c: pa.string() for c in columns or []}
                                         if columns else None,
                                         strings_can_be_null=False))
  if columns is None:
    table = table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
  directory.mkdir()
  bounds = [0, *cuts, table.num_rows]
  for part, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
    pq.write_table(table.slice(a, b - a), directory / f"part-{part:05d}.parquet")


def prepared_files(out):
  """A data set's shards, stats.json, schema.json and vocab/ (not bad_rows.json: its files and
  lines are those of each input)."""
  return {name: data for name, data in data_set(out).items() if name != "bad_rows.json"}


def test_gzipped_parts_and_parquet_prepare_to_the_data_set_of_the_file_they_were_cut_from(
    tmp_path, monkeypatch):
  from data_prep.tiktok import COLUMNS, prepare_tiktok
  from tests.test_tiktok import write_raw
  monkeypatch.setattr(writer, "GROUP_ROWS", 128)  # ExactSplit's groups straddle the parts
  # TikTok's layout (no header, tabs) with its exact split; a bad label stays a row of each.
  write_raw(tmp_path / "tiktok.txt", rows=900, seed=4,
            extra_lines=[(300, "\t".join(["1"] * 6 + ["2", "0"] + ["1"] * 4))])
  lines = (tmp_path / "tiktok.txt").read_text().splitlines()
  cut_into_parts(lines, None, tmp_path / "tiktok-parts", [100, 101, 450, 700])
  as_parquet(tmp_path / "tiktok.txt", tmp_path / "tiktok-parquet", sep="\t", columns=COLUMNS,
             cuts=[129, 600])
  outputs = {}
  for name, processes in [("tiktok.txt", 1), ("tiktok-parts", 2), ("tiktok-parquet", 2)]:
    out = tmp_path / f"out-{name}"
    stats = prepare_tiktok(str(tmp_path / name), str(out), min_count=2, processes=processes,
                           block_bytes=2000, bad_rows=BadRows())
    outputs[name] = prepared_files(out)
  assert {s: v["rows"] for s, v in stats.items()} == {"train": 729, "valid": 81, "test": 90}
  assert outputs["tiktok-parts"] == outputs["tiktok.txt"]
  assert outputs["tiktok-parquet"] == outputs["tiktok.txt"]

  # A logs file (a header, commas) with a random split.
  from tests.test_logs import write_logs
  write_logs(tmp_path / "logs.csv", 800, seed=5, extra=[(40, "u1,i1,a,20240101,1,7,x")])
  header, *lines = (tmp_path / "logs.csv").read_text().splitlines()
  cut_into_parts(lines, header, tmp_path / "logs-parts", [1, 399, 500])
  as_parquet(tmp_path / "logs.csv", tmp_path / "logs-parquet", sep=",", columns=None,
             cuts=[250, 251])
  outputs = {}
  for name in ("logs.csv", "logs-parts", "logs-parquet"):
    out = tmp_path / f"out-{name}"
    prepare_logs(str(tmp_path / name), str(out), features=["user_id", "item_id", "tags"],
                 tasks=["click", "like"], group_column="user_id", multivalent={"tags": "|"},
                 min_count=1, bad_rows=BadRows(), block_bytes=1500, processes=2)
    outputs[name] = prepared_files(out)
  assert sum(name.endswith(".tfrecord") for name in outputs["logs.csv"]) == 12
  assert outputs["logs-parts"] == outputs["logs.csv"]
  assert outputs["logs-parquet"] == outputs["logs.csv"]


def test_bad_row_kinds_are_listed_by_their_earliest_row_whatever_the_workers(tmp_path):
  from tests.test_logs import write_logs
  # A bad label on line 3, a short line a few blocks later: with two workers the reader meets
  # the short line before the label's block is placed.
  write_logs(tmp_path / "logs.csv", 300, seed=6,
             extra=[(1, "u1,i1,a,20240101,1,7,x"), (12, "u2,i2"), (200, "u3,i3,b,20240101,1,9,x")])
  written = {}
  for processes in (1, 2):
    out = tmp_path / f"out-{processes}"
    bad = BadRows()
    prepare_logs(str(tmp_path / "logs.csv"), str(out), features=["user_id", "item_id"],
                 tasks=["click", "like"], bad_rows=bad, block_bytes=150, processes=processes)
    written[processes] = (out / "bad_rows.json").read_bytes()
    assert bad.summary().splitlines()[1].startswith("  label outside {0, 1}: 2 (first: ")
  assert written[1] == written[2]
  assert list(json.loads(written[2])["by_kind"]) == ["label outside {0, 1}", "wrong column count"]
