"""stem_tfrs.data.pipeline: batches, dtypes, shard validation and the label check."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs.data.pipeline import make_dataset
from stem_tfrs.data.shards import validate_shards
from stem_tfrs.data.schema import Schema, SchemaError, load_stats


def test_batches_hold_raw_ids_and_float_labels(tiny_data):
  schema = Schema.load(tiny_data)
  features, labels = next(iter(make_dataset(schema, "train", 32, shuffle=True, seed=1)))
  assert set(features) == set(schema.feature_names)
  assert all(v.dtype == tf.string and v.shape == [32] for v in features.values())
  assert set(labels) == {"finish", "like"}
  assert all(v.dtype == tf.float32 for v in labels.values())


@pytest.mark.slow
def test_one_pass_reads_every_row_once_in_a_seeded_order(tiny_data):
  schema = Schema.load(tiny_data)
  rows = load_stats(tiny_data)["valid"]["rows"]
  batches = list(make_dataset(schema, "valid", 100))
  assert sum(int(f["uid"].shape[0]) for f, _ in batches) == rows
  order = lambda seed: np.concatenate([f["uid"].numpy() for f, _ in
                                       make_dataset(schema, "train", 64, shuffle=True, seed=seed)])
  assert (order(4) == order(4)).all() and not (order(4) == order(5)).all()


def write_shard(path, rows):
  """Writes one record per row; a row maps columns to a value or a list of values (a block)."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for row in rows:
      example = tf.train.Example()
      for key, value in row.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(values[0], bytes):
          example.features.feature[key].bytes_list.value.extend(values)
        else:
          example.features.feature[key].int64_list.value.extend(values)
      writer.write(example.SerializeToString())


def copy_with_train_shard(tiny_data, tmp_path, rows):
  """A copy of the tiny data set whose train split is one shard of `rows`."""
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = Schema.load(str(data))
  write_shard(data / "bad-train.tfrecord", rows)
  schema.splits["train"] = ["bad-train.tfrecord"]
  schema.save(str(data))
  return Schema.load(str(data))


def good_row(**changes):
  row = {name: b"1" for name in ["uid", "item_id", "author_id", "item_city", "channel",
                                 "music_id", "device_id", "video_duration"]}
  row.update(finish=1, like=0)
  row.update(changes)
  return {k: v for k, v in row.items() if v is not None}


def test_validate_shards_names_a_missing_column(tiny_data, tmp_path):
  schema = copy_with_train_shard(tiny_data, tmp_path, [good_row(music_id=None)])
  with pytest.raises(SchemaError, match=r"column 'music_id' named in schema.json is missing "
                                        r"from shard .*bad-train.tfrecord"):
    validate_shards(schema)


def test_validate_shards_names_a_column_of_the_wrong_type(tiny_data, tmp_path):
  schema = copy_with_train_shard(tiny_data, tmp_path, [good_row(like=b"0")])
  with pytest.raises(SchemaError, match="column 'like' .* is a bytes_list, but schema.json "
                                        "expects a int64_list"):
    validate_shards(schema)


def test_validate_shards_rejects_an_empty_shard(tiny_data, tmp_path):
  schema = copy_with_train_shard(tiny_data, tmp_path, [])
  with pytest.raises(SchemaError, match="holds no records"):
    validate_shards(schema)


def test_validate_shards_names_a_shard_cut_short_since_it_was_prepared(tiny_data, tmp_path):
  shutil.copytree(tiny_data, tmp_path / "data")
  shard = tmp_path / "data" / "train-00003-of-00008.tfrecord"
  size = shard.stat().st_size
  with open(shard, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(SchemaError, match=rf"shard .*/train-00003-of-00008.tfrecord of split "
                                        rf"'train' holds {size // 2:,} bytes where data_prep "
                                        rf"wrote {size:,}"):
    validate_shards(Schema.load(str(tmp_path / "data")))


def test_label_outside_0_1_stops_the_pipeline_naming_the_label(tiny_data, tmp_path):
  schema = copy_with_train_shard(tiny_data, tmp_path, [good_row()] * 5 + [good_row(like=2)])
  validate_shards(schema)  # the first record is fine
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="label like in split train must be 0 or 1"):
    list(make_dataset(schema, "train", 4))


def rows_of(dataset, schema):
  """Every (feature values..., label values...) row a dataset yields, as a sorted list."""
  rows = []
  for features, labels in dataset:
    columns = [features[name].numpy() for name in schema.feature_names]
    columns += [labels[label].numpy() for label in schema.labels]
    rows.extend(zip(*columns))
  return sorted(rows)


@pytest.mark.slow
def test_shuffled_records_hold_every_row_once_in_a_new_order_each_epoch(tiny_data):
  schema = Schema.load(tiny_data)
  # a buffer smaller than the split: several chunk buffers and permuted windows per epoch
  shuffled = make_dataset(schema, "train", 100, shuffle=True, seed=7, shuffle_buffer=500)
  assert rows_of(shuffled, schema) == rows_of(make_dataset(schema, "train", 100), schema)
  uids = lambda dataset: np.concatenate([f["uid"].numpy() for f, _ in dataset])
  two_epochs = uids(shuffled.repeat(2))
  half = len(two_epochs) // 2
  assert not (two_epochs[:half] == two_epochs[half:]).all()
  fresh = lambda: make_dataset(schema, "train", 100, shuffle=True, seed=7, shuffle_buffer=500)
  assert (uids(fresh()) == uids(fresh())).all()               # seeded: the same first epoch
  in_order = uids(make_dataset(schema, "train", 100))
  assert not (two_epochs[:half] == in_order).all()
  sizes = [int(f["uid"].shape[0]) for f, _ in make_dataset(
      schema, "train", 100, shuffle=True, seed=7, shuffle_buffer=500, drop_remainder=True)]
  assert set(sizes) == {100} and len(sizes) == half // 100


@pytest.mark.slow
def test_in_memory_serves_the_same_rows_as_the_records_reshuffled_each_epoch(tiny_data):
  schema = Schema.load(tiny_data)
  in_memory = lambda seed: make_dataset(schema, "train", 256, shuffle=True, seed=seed,
                                        in_memory=True)
  assert rows_of(in_memory(3), schema) == rows_of(make_dataset(schema, "train", 256), schema)
  uids = lambda dataset: np.concatenate([f["uid"].numpy() for f, _ in dataset])
  assert (uids(in_memory(3)) == uids(in_memory(3))).all()     # seeded: the same order
  assert not (uids(in_memory(3)) == uids(in_memory(4))).all()
  two_epochs = uids(in_memory(3).repeat(2))
  half = len(two_epochs) // 2
  assert not (two_epochs[:half] == two_epochs[half:]).all()   # a new permutation per epoch


def test_in_memory_checks_labels_when_it_reads_the_split(tiny_data, tmp_path):
  schema = copy_with_train_shard(tiny_data, tmp_path, [good_row()] * 5 + [good_row(like=2)])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="label like in split train must be 0 or 1"):
    make_dataset(schema, "train", 4, in_memory=True)


@pytest.mark.slow
def test_one_row_and_block_records_give_the_same_batches(tiny_data, tmp_path):
  from data_prep.synthetic import prepare_synthetic
  prepare_synthetic(str(tmp_path / "rows"), rows=20_000, seed=7, min_count=1, rows_per_record=1)
  rows, blocks = Schema.load(str(tmp_path / "rows")), Schema.load(tiny_data)
  assert (rows.rows_per_record, blocks.rows_per_record) == (1, 64)
  columns = lambda dataset: [np.concatenate(c) for c in zip(*(
      [f[name].numpy() for name in rows.feature_names] + [l[t].numpy() for t in rows.labels]
      for f, l in dataset))]
  for kwargs in (dict(shuffle=True, seed=7, shuffle_buffer=500), dict(in_memory=True)):
    for a, b in zip(columns(make_dataset(rows, "train", 100, **kwargs)),
                    columns(make_dataset(blocks, "train", 100, **kwargs))):
      assert len(a) == len(b) and (a == b).all()
  assert rows_of(make_dataset(rows, "test", 100), rows) == rows_of(
      make_dataset(blocks, "test", 100), blocks)


@pytest.mark.slow
def test_input_pipelines_each_read_their_own_rows_in_a_seeded_order(tiny_data, tmp_path):
  # 8 train shards: 2 pipelines read their own shards, 16 their own records of every shard
  from data_prep.synthetic import prepare_synthetic
  prepare_synthetic(str(tmp_path / "rows"), rows=4000, seed=7, min_count=1, rows_per_record=1)
  blocks, rows = Schema.load(tiny_data), Schema.load(str(tmp_path / "rows"))
  uids = lambda dataset: np.concatenate([f["uid"].numpy() for f, _ in dataset])
  # Every row of each data set, read once: the in-memory shares are checked against the
  # rows of the block records they are parsed from, as the record shares are.
  everything = {id(schema): rows_of(make_dataset(schema, "train", 1000), schema)
                for schema in (blocks, rows)}
  for schema, kwargs in ((blocks, {}), (rows, {}), (blocks, dict(in_memory=True))):
    for pipelines in (2, 16):
      share = lambda index: make_dataset(
          schema, "train", 1000, shuffle=True, seed=3, shuffle_buffer=500,
          input_context=tf.distribute.InputContext(pipelines, index, 1), **kwargs)
      parts, first_order = [], None
      for index in range(pipelines):
        batches = list(share(index))  # one pass: its rows, and pipeline 1's order
        if index == 1:
          first_order = uids(batches)
        parts.append(rows_of(batches, schema))
      assert all(parts) and sorted(sum(parts, [])) == everything[id(schema)], (kwargs, pipelines)
      assert (first_order == uids(share(1))).all(), (kwargs, pipelines)  # seeded


def test_validate_shards_tells_block_records_from_one_row_records(tiny_data, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = Schema.load(str(data))
  schema.rows_per_record = 1
  schema.save(str(data))
  with pytest.raises(SchemaError, match=r"holds 64 values of column '.*' in a record, but "
                                        r"schema.json expects one row a record: set "
                                        r"\"rows_per_record\""):
    validate_shards(Schema.load(str(data)))


def test_block_record_with_columns_of_different_lengths_is_an_error(tiny_data, tmp_path):
  block = {name: [b"1", b"2"] for name in good_row() if name not in ("finish", "like")}
  block.update(finish=[1, 0], like=[0])
  schema = copy_with_train_shard(tiny_data, tmp_path, [block])
  with pytest.raises(SchemaError, match="holds columns of different lengths: .*finish 2, like 1"):
    validate_shards(schema)
  schema = copy_with_train_shard(tiny_data, tmp_path / "later", [good_row()] * 3 + [block])
  validate_shards(schema)  # the first record is fine
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="a record of split train holds uid and like for different numbers"):
    list(make_dataset(schema, "train", 4))


@pytest.mark.slow
def test_batches_keep_their_size_under_a_strategy(tiny_data):
  # tf.distribute's auto-sharding would rewrite the pipeline's rebatch steps (one worker too)
  schema = Schema.load(tiny_data)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  for kwargs in (dict(shuffle=True, seed=1), {}, dict(shuffle=True, seed=1, in_memory=True)):
    dataset = make_dataset(schema, "train", 512, **kwargs)
    sizes = [int(strategy.experimental_local_results(labels["like"])[0].shape[0])
             for _, labels in strategy.experimental_distribute_dataset(dataset)]
    assert sizes == [int(labels["like"].shape[0]) for _, labels in dataset]
    assert set(sizes[:-1]) == {512}


def test_pipelines_turn_tf_data_autotuning_model_off(tiny_data):
  # With the model on, deleting an iterator (Keras does at every epoch's end) waits for the
  # model's thread to wake: seconds, up to a minute, with the CPU idle. (This checks the
  # datasets as made; Keras' per-device copies under MirroredStrategy are not covered.)
  schema = Schema.load(tiny_data)
  for kwargs in (dict(shuffle=True, seed=1), {}, dict(shuffle=True, seed=1, in_memory=True),
                 dict(in_memory=True)):
    dataset = make_dataset(schema, "train", 512, **kwargs)
    for options in (dataset.options(), dataset.repeat().take(3).options()):
      assert options.autotune.enabled is False, kwargs
      assert options.autotune.initial_parallelism == os.cpu_count(), kwargs


def test_find_damaged_shards_names_a_truncated_shard_and_the_offset_tensorflow_reports(
    tiny_data, tmp_path):
  import re
  from stem_tfrs.data.shards import find_damaged_shards
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = Schema.load(str(data))
  assert find_damaged_shards(schema) == []
  shard = schema.shard_paths("train")[1]
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(size - 100)
  with pytest.raises(tf.errors.DataLossError, match=r"truncated record at (\d+)") as error:
    for _ in tf.data.TFRecordDataset(shard):
      pass
  offset = int(re.search(r"truncated record at (\d+)", error.value.message).group(1))
  (message,) = find_damaged_shards(schema)
  assert message.startswith(f"shard {shard} of split 'train' is damaged: the record at byte "
                            f"{offset:,} ends past the end of the file"), message
  assert find_damaged_shards(schema, "test") == []
  assert find_damaged_shards(schema, "train") == [message]


def test_find_damaged_shards_names_a_shard_cut_inside_a_header_or_with_a_corrupted_length(
    tiny_data, tmp_path):
  from stem_tfrs.data.shards import find_damaged_shards
  data = tmp_path / "data"
  shutil.copytree(tiny_data, data)
  schema = Schema.load(str(data))
  cut, corrupted = schema.shard_paths("valid")[0], schema.shard_paths("test")[0]
  with open(cut, "rb") as f:
    length = int.from_bytes(f.read(8), "little")
  with open(cut, "r+b") as f:
    f.truncate(length + 16 + 5)  # the first record, then 5 bytes of the second's header
  with open(corrupted, "r+b") as f:
    f.write(b"\x7f")  # the first record's length, no longer matching its CRC
  assert find_damaged_shards(schema) == [
      f"shard {cut} of split 'valid' is damaged: the file ends inside the header of the "
      f"record at byte {length + 16:,} (a copy cut short? prepare the data set again)",
      f"shard {corrupted} of split 'test' is damaged: the header of the record at byte 0 "
      "fails its checksum (prepare the data set again)"]
