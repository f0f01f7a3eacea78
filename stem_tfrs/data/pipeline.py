"""tf.data pipelines over a prepared data set's TFRecord shards."""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import tensorflow as tf

from stem_tfrs.data.records import parse_blocks, parse_records
from stem_tfrs.data.schema import PADDING, Schema, SchemaError


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
    return checked(parse_blocks(schema, serialized, split))

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
