"""Checks of a prepared data set's TFRecord shards: readable, of the schema's columns, whole."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import tensorflow as tf

from stem_tfrs.data.schema import SHARD_BYTES, Schema, SchemaError, load_stats, row_lengths_key


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
