"""tf.data pipelines over a prepared data set's TFRecord shards."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from stem_tfrs.schema import (PADDING, SHARD_BYTES, Schema, SchemaError, load_stats,
                              row_lengths_key)

_TF_DTYPES = {"string": tf.string, "int64": tf.int64}


def feature_spec(schema: Schema) -> dict:
  """`tf.io.parse_example` spec of a shard record's features and labels.

  One-row records (`rows_per_record` 1): a [] value per column, a ragged
  list for a multivalent feature. Block records: every column a ragged
  [records, rows] list, a multivalent feature [records, rows, values].
  """
  if schema.rows_per_record > 1:
    def block_spec(f):
      if not f.multivalent:
        return tf.io.RaggedFeature(_TF_DTYPES[f.dtype])
      lengths = tf.io.RaggedFeature.RowLengths(row_lengths_key(f.name))
      return tf.io.RaggedFeature(_TF_DTYPES[f.dtype], value_key=f.name, partitions=[lengths])
    spec = {f.name: block_spec(f) for f in schema.features}
    spec.update({name: tf.io.RaggedFeature(tf.float32) for name in schema.numeric_names})
    spec.update({label: tf.io.RaggedFeature(tf.int64) for label in schema.labels})
    return spec
  spec = {f.name: (tf.io.RaggedFeature(_TF_DTYPES[f.dtype]) if f.multivalent
                   else tf.io.FixedLenFeature([], _TF_DTYPES[f.dtype]))
          for f in schema.features}
  spec.update({name: tf.io.FixedLenFeature([], tf.float32) for name in schema.numeric_names})
  spec.update({label: tf.io.FixedLenFeature([], tf.int64) for label in schema.labels})
  return spec


def parse_records(schema: Schema, serialized: tf.Tensor, split: str = "") -> Dict[str, tf.Tensor]:
  """Parses [N] serialized shard records into one tensor of rows per column.

  Returns:
    Column name -> [rows] values ([rows, None] ragged for a multivalent
    feature), numeric features as float32, labels as int64. For block
    records, the blocks' rows one after the other; a block whose columns
    hold different numbers of rows stops the pipeline with an
    `InvalidArgumentError` naming the split.
  """
  if schema.rows_per_record == 1:
    return tf.io.parse_example(serialized, feature_spec(schema))
  return _parse_ragged_blocks(schema, serialized, split)


def _parse_ragged_blocks(schema: Schema, serialized: tf.Tensor,
                         split: str) -> Dict[str, tf.Tensor]:
  """[rows] columns of [N] block records, block after block (`parse_records`)."""
  parsed = tf.io.parse_example(serialized, feature_spec(schema))
  names = schema.input_names + schema.labels
  rows = parsed[names[0]].row_lengths()
  checks = [tf.debugging.assert_equal(
      parsed[name].row_lengths(), rows,
      message=f"a record of split {split} holds {names[0]} and {name} for different numbers "
              "of rows") for name in names[1:]]
  with tf.control_dependencies(checks):
    return {name: tf.identity(value.flat_values) if value.ragged_rank == 1
            else value.merge_dims(0, 1) for name, value in parsed.items()}


def _parse_blocks(schema: Schema, serialized: tf.Tensor, split: str) -> Dict[str, tf.Tensor]:
  """Parses [N] block records into one tensor of rows per column, as `parse_records`.

  When every record holds `rows_per_record` rows of the first label, and no
  feature is multivalent, the columns are parsed as fixed-length lists
  (`tf.io.FixedLenFeature`), which TensorFlow parses straight into a
  [N, rows_per_record] tensor, with no ragged intermediate to copy from
  (`benchmarks/input_pipeline.py` measures the difference). A record holding another number of rows
  (a shard's last) sends the whole call to the ragged parse of
  `parse_records`, with its check that every column holds as many rows; in
  the fixed-length parse a column of another length stops the pipeline with
  TensorFlow's InvalidArgumentError naming the column. Both give the same
  rows in the same order.
  """
  if any(f.multivalent for f in schema.features):
    return _parse_ragged_blocks(schema, serialized, split)
  block = schema.rows_per_record
  spec = feature_spec(schema)
  first = schema.labels[0]
  rows = tf.io.parse_example(serialized, {first: spec[first]})[first].row_lengths()
  fixed = {name: tf.io.FixedLenFeature([block], value.dtype) for name, value in spec.items()}

  def full():
    return {name: tf.reshape(value, [-1])
            for name, value in tf.io.parse_example(serialized, fixed).items()}

  return tf.cond(tf.reduce_all(rows == block), full,
                 lambda: _parse_ragged_blocks(schema, serialized, split))


def serving_input_signature(schema: Schema) -> Dict[str, tf.TensorSpec]:
  """One tensor per raw feature column, named and typed as in the schema.

  Shape [None], or [None, None] padded with `PADDING` for a multivalent one;
  a numeric feature's is a [None] float32 tensor (NaN: missing).
  """
  signature = {f.name: tf.TensorSpec([None, None] if f.multivalent else [None],
                                     _TF_DTYPES[f.dtype], name=f.name)
               for f in schema.features}
  signature.update({name: tf.TensorSpec([None], tf.float32, name=name)
                    for name in schema.numeric_names})
  return signature


def validate_shards(schema: Schema, splits=("train", "valid", "test")) -> None:
  """Checks that every split has readable shards holding the schema's columns.

  Reads the first record of each split's first shard: cheap, and it catches a
  schema that names a column the shards lack, or one of another type, or
  block records under a schema that expects one row a record, before
  anything is trained or written. Then compares every shard's size with the
  one stats.json records (`_check_sizes`).

  Raises:
    SchemaError: naming the split, the shard and the column, or the shard
      whose size changed.
  """
  kinds = {"string": "bytes_list", "int64": "int64_list"}
  expected = {f.name: kinds[f.dtype] for f in schema.features}
  expected.update({name: "float_list" for name in schema.numeric_names})
  expected.update({label: "int64_list" for label in schema.labels})
  blocks = schema.rows_per_record > 1
  multivalent = {f.name for f in schema.features if f.multivalent}  # an empty list has no kind
  if blocks:
    expected.update({row_lengths_key(name): "int64_list" for name in multivalent})
  single = [name for name in expected if name not in multivalent]
  stats = load_stats(schema.directory)
  for split in splits:
    path = schema.shard_paths(split)[0]
    if not tf.io.gfile.exists(path):
      raise SchemaError(f"shard {path} of split '{split}' does not exist")
    try:
      record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
      raise SchemaError(f"shard {path} is not a readable TFRecord file: {e.message}")
    if record is None:
      raise SchemaError(f"shard {path} of split '{split}' holds no records")
    example = tf.train.Example.FromString(record.numpy())
    present = example.features.feature
    for column, kind in expected.items():
      if column not in present:
        raise SchemaError(
            f"column '{column}' named in schema.json is missing from shard {path} "
            f"(it holds: {', '.join(sorted(present))})")
      if present[column].WhichOneof("kind") not in (kind, None if column in multivalent else kind):
        raise SchemaError(
            f"column '{column}' in shard {path} is a {present[column].WhichOneof('kind')}"
            f", but schema.json expects a {kind}")
    counts = {name: len(getattr(present[name], expected[name]).value) for name in single}
    if not blocks and max(counts.values()) > 1:
      name = max(counts, key=counts.get)
      raise SchemaError(
          f"shard {path} holds {counts[name]} values of column '{name}' in a record, but "
          f"schema.json expects one row a record: set \"rows_per_record\" there to the "
          "rows a record holds")
    if len(set(counts.values())) > 1:
      raise SchemaError(
          f"the first record of shard {path} holds columns of different lengths: " +
          ", ".join(f"{name} {n}" for name, n in counts.items()))
    _check_sizes(schema, split, stats.get(split, {}).get(SHARD_BYTES))


def _crc32c_table() -> List[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data` (for the 8 bytes of a record's length)."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def shard_damage(path: str) -> Optional[str]:
  """Where a TFRecord file is damaged, in words, or None if its records are whole.

  Walks the record headers only: each record is an 8-byte little-endian
  length, its 4-byte masked CRC-32C, the data, and the data's 4-byte CRC. A
  file that ends inside a header, a header whose CRC does not match its
  length, or a record that runs past the end of the file is damaged. The
  data's own CRCs are not checked (TensorFlow checks them as it reads), so the
  cost is one small read per record, not a read of the file.
  """
  opener = tf.io.gfile.GFile if "://" in path else open
  with opener(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    offset = 0
    while offset < size:
      f.seek(offset)
      header = f.read(12)
      if len(header) < 12:
        return (f"the file ends inside the header of the record at byte {offset:,} (a copy "
                "cut short? prepare the data set again)")
      length = int.from_bytes(header[:8], "little")
      if _masked_crc32c(header[:8]) != int.from_bytes(header[8:], "little"):
        return (f"the header of the record at byte {offset:,} fails its checksum (prepare the "
                "data set again)")
      end = offset + 12 + length + 4
      if end > size:
        return (f"the record at byte {offset:,} ends past the end of the file (it needs "
                f"{end - offset:,} bytes, {size - offset:,} are left: a copy cut short? "
                "prepare the data set again)")
      offset = end
  return None


def _check_sizes(schema: Schema, split: str, sizes: Optional[Dict[str, int]]) -> None:
  """A SchemaError naming the first shard of `split` whose size is not the one data_prep wrote.

  One stat a shard: a shard cut short (an interrupted copy, a full disk) is
  named before training reads into it, where TensorFlow would stop with
  "truncated record at N" and no file. Shards stats.json gives no size for
  (data sets written before data_prep recorded them) are not checked.
  """
  for name, path in zip(schema.splits.get(split, []), schema.shard_paths(split)):
    if name not in (sizes or {}):
      continue
    if not tf.io.gfile.exists(path):
      raise SchemaError(f"shard {path} of split '{split}' does not exist")
    found = tf.io.gfile.stat(path).length
    if found != sizes[name]:
      raise SchemaError(f"shard {path} of split '{split}' holds {found:,} bytes where "
                        f"data_prep wrote {sizes[name]:,}: it was cut short or changed since; "
                        "copy or prepare the data set again")


def find_damaged_shards(schema: Schema, split: Optional[str] = None) -> List[str]:
  """One message per damaged shard of `split` (default: every split), naming file and offset.

  TensorFlow's reader reports a damaged shard as `DataLossError: truncated
  record at 35189`, without the file; this names it. It walks every record
  header of every shard (`shard_damage`): one small read per record, so call
  it when a `tf.errors.DataLossError` has surfaced rather than before every
  run. A shard that does not exist is named too.

  Returns:
    Messages like "shard PATH of split 'train' is damaged: the record at byte
    35,189 ends past the end of the file (...)"; [] when every shard is whole.
  """
  messages = []
  for name in [split] if split is not None else list(schema.splits):
    for path in schema.shard_paths(name):
      if not tf.io.gfile.exists(path):
        messages.append(f"shard {path} of split '{name}' does not exist")
        continue
      damage = shard_damage(path)
      if damage:
        messages.append(f"shard {path} of split '{name}' is damaged: {damage}")
  return messages


def make_dataset(schema: Schema, split: str, batch_size: int, *,
                 shuffle: bool = False, seed: Optional[int] = None,
                 shuffle_buffer: int = 100_000, drop_remainder: bool = False,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 in_memory: bool = False) -> tf.data.Dataset:
  """Batches of (features, labels) from the shards of `split`.

  Shards are read in parallel (interleave), shuffled (if asked) through a
  buffer of `shuffle_buffer` rows' worth of blocks of 64 consecutive rows
  of a shard (block records, or chunks of one-row records), parsed many
  records at a time with one vectorized `parse_example`, cut into batches
  and prefetched. Block records (`schema.rows_per_record` > 1) are parsed
  before they are cut into batches, one-row records after. For the same
  rows and seed, 64-row blocks give the same shuffled batches as one-row
  records; unshuffled reads alternate between shards by block rather than
  by row. The order is deterministic for a given seed, and new every epoch.

  Decision: a batch is a run of whole shuffled blocks (64 blocks at batch
  4096), not rows drawn from across a window of blocks. Spreading a block's
  rows over several batches needs one more copy of every column of every
  row after the parse, and TensorFlow copies string tensors element by
  element: it costs about as much as the parse itself
  (`benchmarks/input_pipeline.py` measures the records pipeline, and the one
  of any git revision beside it). A batch's blocks come out of the same
  buffer of `shuffle_buffer` rows' worth of blocks as before; what changed
  is that a block's rows now stay together (a window of that many rows was
  permuted before it was cut into batches).

  With `in_memory`, the split is read and parsed once, when this function
  is called, into one tensor per column; every epoch then draws a fresh
  permutation of all rows in one op (a full shuffle, not a buffer) and
  gathers each batch from memory, with no parsing. It needs the parsed
  split in RAM (about 30-60 bytes a row per categorical column for short
  string ids).

  Every label must be 0 or 1: a batch holding another value stops the
  pipeline with an `InvalidArgumentError` that names the label.

  Args:
    schema: The prepared data set's schema.
    split: "train", "valid" or "test".
    batch_size: Examples per batch (per input pipeline).
    shuffle: Shuffle shards and records (training).
    seed: Shuffle seed.
    shuffle_buffer: Rows in the shuffle buffer and in each permuted window.
    drop_remainder: Drop the last partial batch.
    input_context: Under a multi-worker strategy, reads only this pipeline's
      share of the shards (of the records when there are fewer shards than
      pipelines, or with `in_memory`).
    in_memory: Parse the split once and serve batches from memory.

  Returns:
    A dataset of (features, labels): features maps each feature name to a
    [B] tensor of raw ids (schema dtype), or [B, L] padded with `PADDING` for
    a multivalent feature, and each numeric feature to a [B] float32 tensor
    of raw values (NaN: missing); labels maps each task to a [B] float32
    tensor of 0/1.
  """
  labels = schema.labels

  def checked(columns: Dict[str, tf.Tensor]) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
    """Columns -> (features, labels): labels checked and cast to float32, lists ragged."""
    checks = [tf.debugging.Assert(
        tf.reduce_all((columns[label] == 0) | (columns[label] == 1)),
        [f"label {label} in split {split} must be 0 or 1; values in the batch:",
         columns[label]], summarize=8) for label in labels]
    with tf.control_dependencies(checks):
      label_values = {label: tf.cast(columns[label], tf.float32) for label in labels}
    return {name: columns[name] for name in schema.input_names}, label_values

  def parse(serialized: tf.Tensor):
    """Records -> (features, labels)."""
    if schema.rows_per_record == 1:
      return checked(parse_records(schema, serialized, split))
    return checked(_parse_blocks(schema, serialized, split))

  def pad(features, label_values):
    """Multivalent features' ragged lists -> [B, L] padded with `PADDING`."""
    padded = dict(features)
    padded.update({f.name: features[f.name].to_tensor(default_value=PADDING[f.dtype])
                   for f in schema.features if f.multivalent})
    return padded, label_values

  multivalent = any(f.multivalent for f in schema.features)

  if in_memory:
    columns = _read_columns(schema, split, parse)
    first, step = 0, 1
    if input_context is not None and input_context.num_input_pipelines > 1:
      first, step = input_context.input_pipeline_id, input_context.num_input_pipelines
    rows = tf.constant(columns[1][labels[0]].shape[0], tf.int64)
    if shuffle:  # one permutation of this pipeline's rows per epoch, drawn in one op
      epoch_seed = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
      indices = epoch_seed.take(1).map(lambda pair: tf.random.experimental.stateless_shuffle(
          tf.range(first, rows, step, dtype=tf.int64), pair)).rebatch(
              batch_size, drop_remainder=drop_remainder)
    else:
      indices = tf.data.Dataset.range(first, rows, step).batch(
          batch_size, drop_remainder=drop_remainder)
    return _finish(indices.map(lambda index: _gather(schema, columns, index),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
  paths = schema.shard_paths(split)
  files = tf.data.Dataset.from_tensor_slices(paths)
  pipelines = input_context.num_input_pipelines if input_context is not None else 1
  if 1 < pipelines <= len(paths):  # each pipeline its own shards
    files = files.shard(pipelines, input_context.input_pipeline_id)
  share = None
  if pipelines > len(paths):  # fewer shards than pipelines: each its own records
    share = (pipelines, input_context.input_pipeline_id)
  if shuffle:
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
  block = schema.rows_per_record
  if block > 1:  # parse groups of whole blocks, then cut their rows into batches
    records = _records(files, len(paths), share)
    if shuffle:
      records = records.shuffle(max(1, shuffle_buffer // block), seed=seed,
                                reshuffle_each_iteration=True)
    group = max(1, max(batch_size, _PARSE_ROWS) // block)
    batches = records.batch(group).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).rebatch(
            batch_size, drop_remainder=drop_remainder)
    if multivalent:
      batches = batches.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(batches)
  if shuffle:
    batches = _shuffled_batches(files, len(paths), batch_size, shuffle_buffer, seed,
                                drop_remainder, share)
  else:
    batches = _records(files, len(paths), share).batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
  return _finish(batches.map((lambda serialized: pad(*parse(serialized))) if multivalent else parse,
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _finish(batches: tf.data.Dataset) -> tf.data.Dataset:
  """Prefetched, closed to tf.distribute's auto-sharding, without tf.data's autotuning model.

  The pipeline shards itself (`input_context`). Auto-sharding, which
  `experimental_distribute_dataset` (and so `model.fit` under a strategy)
  applies even for one worker, rewrites `rebatch` steps into ones that only
  split batches: the block pipeline would then yield whole parse groups.
  """
  options = _without_autotune_model(tf.data.Options())
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


def _without_autotune_model(options: tf.data.Options) -> tf.data.Options:
  """`options` with tf.data's autotuning model off: an iterator then closes at once.

  With the model on (TensorFlow's default), deleting an iterator waits for
  the model's background thread, which only wakes at its next optimization:
  up to a period that doubles from 10 ms to a minute as the iterator ages.
  Keras deletes the training and the validation iterator at every epoch's
  end, so each epoch of a long run could end with the CPU idle for up to a
  minute (4.2 s before the third epoch of the README's run). With the model
  off, `AUTOTUNE` means a fixed parallelism of one call per core (TensorFlow's
  default without the model is min(16, cores)) and a prefetch buffer that
  grows while the consumer waits; the pipeline alone measured as fast as
  with the model (1.6-3.1M rows/s at batch 1024 and 4096, records and in
  memory, 2 cores). Under `tf.distribute.MirroredStrategy`, the per-device
  copies that Keras' `fit` makes of a dataset take default options, so the
  model, and the pause, come back there (1.4-1.6 s an epoch, seen with one
  CPU device).
  """
  options.autotune.enabled = False
  options.autotune.initial_parallelism = os.cpu_count() or 1
  return options


#: Consecutive one-row records of a shard that tf.data moves as one element when it shuffles.
_CHUNK = 64
#: Rows a parse call handles when it reads a whole split of block records into memory.
_PARSE_ROWS = 16_384


def _records(files: tf.data.Dataset, num_files: int,
             share: Optional[Tuple[int, int]]) -> tf.data.Dataset:
  """The records of up to 8 shards at a time, interleaved one record from each in turn."""
  def read(path):
    records = tf.data.TFRecordDataset(path)
    return records.shard(*share) if share is not None else records
  return files.interleave(read, cycle_length=min(num_files, 8),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _shuffled_batches(files: tf.data.Dataset, num_files: int, batch_size: int, window: int,
                      seed: Optional[int], drop_remainder: bool,
                      share: Optional[Tuple[int, int]]) -> tf.data.Dataset:
  """Batches of serialized one-row records, in shuffled chunks of consecutive records.

  Each shard is read in chunks of `_CHUNK` consecutive records, the chunks
  of up to 8 shards are interleaved and shuffled in a buffer of `window`
  records' worth of chunks, and the shuffled chunks are cut into batches:
  the order 64-row block records of the same rows give (`make_dataset`).
  tf.data moves chunks, not records, through the shuffle.

  Args:
    files: Shard paths, in this epoch's order.
    num_files: How many.
    batch_size: Records per batch.
    window: Records in the shuffle buffer.
    seed: Seed of the shuffle (None: unseeded).
    drop_remainder: Drop the epoch's last partial batch.
    share: (pipelines, index): keep only every pipelines-th record of each shard.

  Returns:
    A dataset of [batch_size] tf.string tensors.
  """
  chunk = max(1, min(_CHUNK, window))

  def read(path):
    records = tf.data.TFRecordDataset(path)
    return (records.shard(*share) if share is not None else records).batch(chunk)

  chunks = files.interleave(read, cycle_length=min(num_files, 8),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return (chunks.shuffle(max(1, window // chunk), seed=seed, reshuffle_each_iteration=True)
          .rebatch(batch_size, drop_remainder=drop_remainder))


def _read_columns(schema: Schema, split: str, parse) -> Tuple[dict, dict]:
  """The whole split as (features, labels), one tensor per column, in shard order.

  Multivalent features stay ragged here; `_gather` pads each batch.
  """
  records = tf.data.Dataset.from_tensor_slices(schema.shard_paths(split)).interleave(
      tf.data.TFRecordDataset, cycle_length=1)
  parsed = records.batch(max(1, _PARSE_ROWS // schema.rows_per_record)).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE).with_options(
          _without_autotune_model(tf.data.Options()))
  features, labels = {}, {}
  for batch_features, batch_labels in parsed:
    for name, value in batch_features.items():
      features.setdefault(name, []).append(value)
    for name, value in batch_labels.items():
      labels.setdefault(name, []).append(value)
  if not labels:
    raise SchemaError(f"split '{split}' of {schema.directory} holds no records")
  return ({name: tf.concat(parts, axis=0) for name, parts in features.items()},
          {name: tf.concat(parts, axis=0) for name, parts in labels.items()})


def _gather(schema: Schema, columns: Tuple[dict, dict], index: tf.Tensor):
  features, labels = columns
  batch = {}
  for f in schema.features:
    value = tf.gather(features[f.name], index)
    batch[f.name] = value.to_tensor(default_value=PADDING[f.dtype]) if f.multivalent else value
  for name in schema.numeric_names:
    batch[name] = tf.gather(features[name], index)
  return batch, {name: tf.gather(value, index) for name, value in labels.items()}
