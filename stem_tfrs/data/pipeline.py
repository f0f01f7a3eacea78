"""tf.data pipelines over a prepared data set's TFRecord shards."""

from __future__ import annotations

import dataclasses
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

  One of three pipelines, each its own function:
  - `_block_batches`, block records (`schema.rows_per_record` > 1): shards
    read in parallel (interleave), shuffled (if asked) through a buffer of
    `shuffle_buffer` rows' worth of blocks, parsed many records at a time
    with one vectorized `parse_example`, then cut into batches.
  - `_row_batches`, one-row records: the same, with chunks of 64
    consecutive records of a shard moving through the shuffle in place of
    blocks, cut into batches before they are parsed.
  - `_in_memory_batches` (`in_memory`): the split is read and parsed once,
    when this function is called, into one tensor per column; every epoch
    then draws a fresh permutation of all rows in one op (a full shuffle,
    not a buffer) and gathers each batch from memory, with no parsing. It
    needs the parsed split in RAM.
  Every batch is then prefetched (`_finish`).

  For the same rows and seed, 64-row blocks give the same shuffled batches
  as one-row records; unshuffled reads alternate between shards by block
  rather than by row. The order is deterministic for a given seed, and new
  every epoch.

  Decision: a batch is a run of whole shuffled blocks, not rows drawn from
  across a window of blocks. Spreading a block's rows over several batches
  needs one more copy of every column of every row after the parse, and
  TensorFlow copies string tensors element by element: it costs about as
  much as the parse itself (`benchmarks/input_pipeline.py` measures the
  records pipeline, and the one of any git revision beside it). A batch's
  blocks come out of the same buffer of `shuffle_buffer` rows' worth of
  blocks as before; what changed is that a block's rows now stay together
  (a window of that many rows was permuted before it was cut into batches).

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
  batching = _Batching(batch_size, shuffle, seed, shuffle_buffer, drop_remainder)
  parsing = _Parsing(schema, split)
  if in_memory:
    batches = _in_memory_batches(parsing, batching, input_context)
  elif schema.rows_per_record > 1:
    batches = _block_batches(parsing, _shards(schema, split, batching, input_context), batching)
  else:
    batches = _row_batches(parsing, _shards(schema, split, batching, input_context), batching)
  return _finish(batches)


@dataclasses.dataclass(frozen=True)
class _Batching:
  """How `make_dataset` was asked to batch (its arguments of the same names)."""
  batch_size: int
  shuffle: bool
  seed: Optional[int]
  shuffle_buffer: int
  drop_remainder: bool


@dataclasses.dataclass(frozen=True)
class _Shards:
  """A pipeline's shard files and its share of them.

  Attributes:
    files: Shard paths, in this epoch's order (shuffled if asked), this
      pipeline's shards only when each pipeline has its own.
    count: How many shards the split has.
    share: (pipelines, index) when there are fewer shards than pipelines:
      keep only every pipelines-th record of each shard; else None.
  """
  files: tf.data.Dataset
  count: int
  share: Optional[Tuple[int, int]]


class _Parsing:
  """The parse and pad steps of one split's records: labels checked, lists padded."""

  def __init__(self, schema: Schema, split: str):
    self.schema = schema
    self.split = split
    self.multivalent = any(f.multivalent for f in schema.features)

  def checked(self, columns: Dict[str, tf.Tensor]
              ) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
    """Columns -> (features, labels): labels checked and cast to float32, lists ragged."""
    labels = self.schema.labels
    checks = [tf.debugging.Assert(
        tf.reduce_all((columns[label] == 0) | (columns[label] == 1)),
        [f"label {label} in split {self.split} must be 0 or 1; values in the batch:",
         columns[label]], summarize=8) for label in labels]
    with tf.control_dependencies(checks):
      label_values = {label: tf.cast(columns[label], tf.float32) for label in labels}
    return {name: columns[name] for name in self.schema.input_names}, label_values

  def parse(self, serialized: tf.Tensor):
    """Records -> (features, labels)."""
    if self.schema.rows_per_record == 1:
      return self.checked(parse_records(self.schema, serialized, self.split))
    return self.checked(parse_blocks(self.schema, serialized, self.split))

  def pad(self, features, label_values):
    """Multivalent features' ragged lists -> [B, L] padded with `PADDING`."""
    padded = dict(features)
    padded.update({f.name: features[f.name].to_tensor(default_value=PADDING[f.dtype])
                   for f in self.schema.features if f.multivalent})
    return padded, label_values


def _in_memory_batches(parsing: _Parsing, batching: _Batching,
                       input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
  """Batches gathered from the split parsed into memory now, in a new permutation of this
  pipeline's rows every epoch when shuffled (every num_input_pipelines-th row)."""
  schema = parsing.schema
  columns = _read_columns(schema, parsing.split, parsing.parse)
  first, step = 0, 1
  if input_context is not None and input_context.num_input_pipelines > 1:
    first, step = input_context.input_pipeline_id, input_context.num_input_pipelines
  rows = tf.constant(columns[1][schema.labels[0]].shape[0], tf.int64)
  if batching.shuffle:  # one permutation of this pipeline's rows per epoch, drawn in one op
    epoch_seed = tf.data.Dataset.random(seed=batching.seed,
                                        rerandomize_each_iteration=True).batch(2)
    indices = epoch_seed.take(1).map(lambda pair: tf.random.experimental.stateless_shuffle(
        tf.range(first, rows, step, dtype=tf.int64), pair)).rebatch(
            batching.batch_size, drop_remainder=batching.drop_remainder)
  else:
    indices = tf.data.Dataset.range(first, rows, step).batch(
        batching.batch_size, drop_remainder=batching.drop_remainder)
  return indices.map(lambda index: _gather(schema, columns, index),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _shards(schema: Schema, split: str, batching: _Batching,
            input_context: Optional[tf.distribute.InputContext]) -> _Shards:
  """This pipeline's shards of `split`, shuffled each epoch when asked."""
  paths = schema.shard_paths(split)
  files = tf.data.Dataset.from_tensor_slices(paths)
  pipelines = input_context.num_input_pipelines if input_context is not None else 1
  if 1 < pipelines <= len(paths):  # each pipeline its own shards
    files = files.shard(pipelines, input_context.input_pipeline_id)
  share = None
  if pipelines > len(paths):  # fewer shards than pipelines: each its own records
    share = (pipelines, input_context.input_pipeline_id)
  if batching.shuffle:
    files = files.shuffle(len(paths), seed=batching.seed, reshuffle_each_iteration=True)
  return _Shards(files, len(paths), share)


def _block_batches(parsing: _Parsing, shards: _Shards, batching: _Batching) -> tf.data.Dataset:
  """Batches of block records: groups of whole blocks parsed, then their rows cut into
  batches (a batch is a run of whole blocks)."""
  block = parsing.schema.rows_per_record
  records = _records(shards)
  if batching.shuffle:
    records = records.shuffle(max(1, batching.shuffle_buffer // block), seed=batching.seed,
                              reshuffle_each_iteration=True)
  group = max(1, max(batching.batch_size, _PARSE_ROWS) // block)
  batches = records.batch(group).map(
      parsing.parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).rebatch(
          batching.batch_size, drop_remainder=batching.drop_remainder)
  if parsing.multivalent:
    batches = batches.map(parsing.pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return batches


def _row_batches(parsing: _Parsing, shards: _Shards, batching: _Batching) -> tf.data.Dataset:
  """Batches of one-row records: records cut into batches (in shuffled chunks when
  shuffled), then each batch parsed."""
  if batching.shuffle:
    batches = _shuffled_batches(shards, batching)
  else:
    batches = _records(shards).batch(
        batching.batch_size, drop_remainder=batching.drop_remainder,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  parse = ((lambda serialized: parsing.pad(*parsing.parse(serialized))) if parsing.multivalent
           else parsing.parse)
  return batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
  minute. With the model off, `AUTOTUNE` means a fixed parallelism of one
  call per core (TensorFlow's default without the model is min(16, cores))
  and a prefetch buffer that grows while the consumer waits.

  Decision: the model stays off; the pipeline alone is as fast without it
  (`benchmarks/input_pipeline.py` times `make_dataset`'s pipelines, which
  turn it off). Under `tf.distribute.MirroredStrategy`, the per-device
  copies that Keras' `fit` makes of a dataset take default options, so the
  model, and the pause, come back there.
  """
  options.autotune.enabled = False
  options.autotune.initial_parallelism = os.cpu_count() or 1
  return options


#: Consecutive one-row records of a shard that tf.data moves as one element when it shuffles.
_CHUNK = 64
#: Rows a parse call handles when it reads a whole split of block records into memory.
_PARSE_ROWS = 16_384


def _records(shards: _Shards) -> tf.data.Dataset:
  """The records of up to 8 shards at a time, interleaved one record from each in turn."""
  share = shards.share

  def read(path):
    records = tf.data.TFRecordDataset(path)
    return records.shard(*share) if share is not None else records
  return shards.files.interleave(read, cycle_length=min(shards.count, 8),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _shuffled_batches(shards: _Shards, batching: _Batching) -> tf.data.Dataset:
  """Batches of serialized one-row records, in shuffled chunks of consecutive records.

  Each shard is read in chunks of `_CHUNK` consecutive records, the chunks
  of up to 8 shards are interleaved and shuffled in a buffer of
  `batching.shuffle_buffer` records' worth of chunks, and the shuffled
  chunks are cut into batches: the order 64-row block records of the same
  rows give (`make_dataset`). tf.data moves chunks, not records, through
  the shuffle.

  Args:
    shards: This pipeline's shards, in this epoch's order, and its share of their records.
    batching: Batch size, seed (None: unseeded), buffer and whether to drop the epoch's
      last partial batch.

  Returns:
    A dataset of [batch_size] tf.string tensors.
  """
  window = batching.shuffle_buffer
  chunk = max(1, min(_CHUNK, window))
  share = shards.share

  def read(path):
    records = tf.data.TFRecordDataset(path)
    return (records.shard(*share) if share is not None else records).batch(chunk)

  chunks = shards.files.interleave(read, cycle_length=min(shards.count, 8),
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return (chunks.shuffle(max(1, window // chunk), seed=batching.seed,
                         reshuffle_each_iteration=True)
          .rebatch(batching.batch_size, drop_remainder=batching.drop_remainder))


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
  """The rows `index` [B] of `_read_columns`' columns as (features, labels), lists padded."""
  features, labels = columns
  batch = {}
  for f in schema.features:
    value = tf.gather(features[f.name], index)
    batch[f.name] = value.to_tensor(default_value=PADDING[f.dtype]) if f.multivalent else value
  for name in schema.numeric_names:
    batch[name] = tf.gather(features[name], index)
  return batch, {name: tf.gather(value, index) for name, value in labels.items()}
