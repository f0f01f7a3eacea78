"""Shard records serialized many at a time, with array code instead of one proto per record.

`encode_records` turns N rows of columns into the serialized `tf.train.Example`
blocks of `rows_per_record` rows that `data_prep.writer` writes to a shard
(the record format is in `stem_tfrs.data.schema`), byte for byte what
`tf.train.Example.SerializeToString(deterministic=True)` gives for the same
rows, without building a message or touching a Python object per value.

Design: the protobuf wire format is written directly. A record is

    Example   0x0A len Features
    Features  (0x0A len FeatureEntry) per key, in the order deterministic
              serialization gives map entries (by the keys' bytes; where one
              key begins another, as the protobuf runtime has it: `_map_order`)
    FeatureEntry  0x0A len key 0x12 len Feature
    Feature   0x0A len BytesList | 0x12 len FloatList | 0x1A len Int64List
    BytesList (0x0A len value) per value; an empty list is present, empty
    FloatList, Int64List   0x0A len packed values (absent when there are none):
              little-endian float32s, base-128 varints (a negative int64 takes 10)

Every length is a varint. Each column is encoded once for all rows: the bytes
values framed (each value's tag and length put in front of it, by pyarrow's
`binary_replace_slice` when every length fits one byte, else by numpy),
floats as their bytes, integers as varints. A
record's part of a column is then one contiguous slice of that buffer, so a
record is its per-key headers (all lengths known from the slice sizes, computed
for all records at once) interleaved with those slices, which pyarrow's
`binary_join_element_wise` concatenates for all records in one call. Work is
done per batch of whole records to bound the temporary memory. Speed against
the message-per-record path: benchmarks/record_encoding.py.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.internal import api_implementation
import tensorflow as tf

from stem_tfrs.data.schema import Schema, row_lengths_key

Column = Union[pa.Array, pa.ChunkedArray, np.ndarray]

#: Rows encoded at a time, rounded down to whole records (at least one record):
#: bounds the temporary buffers to some tens of bytes per value of a batch.
BATCH_ROWS = 1 << 17

#: Tag of the Feature field of a kind: bytes_list 1, float_list 2, int64_list 3, length-delimited.
_TAGS = {"bytes": 0x0A, "list": 0x0A, "float": 0x12, "int64": 0x1A}
_EMPTY = pa.scalar(b"", pa.large_binary())
_RUNTIME = api_implementation.Type()  # "upb", "cpp" or "python"


def encode_records(columns: Dict[str, Column], rows_per_record: int) -> List[bytes]:
  """Serializes N rows as `tf.train.Example` blocks of `rows_per_record` consecutive rows.

  Each column becomes one feature of every record, of the kind its type says:

  - a pyarrow string or binary array (of any offset width): a bytes_list of
    the rows' values, written as they are (a string's UTF-8 bytes);
  - a pyarrow list of strings or binaries: a multivalent feature, the block's
    lists one after the other in a bytes_list (present even when empty) and,
    when `rows_per_record` > 1, their lengths in an int64_list under
    `stem_tfrs.data.schema.row_lengths_key(name)`;
  - a numpy floating array: a float_list of the values as float32 (NaN and
    infinities kept);
  - a numpy integer array: an int64_list of the values as int64.

  Args:
    columns: Feature name -> N values; pyarrow chunked arrays are accepted.
      No value may be null (write missing strings as "").
    rows_per_record: Rows a record holds; the last record holds the rest.

  Returns:
    ceil(N / rows_per_record) serialized records, identical to
    `example.SerializeToString(deterministic=True)` of the `tf.train.Example`
    that `data_prep.writer` builds from the same rows.

  Raises:
    TypeError: a column of a type listed nowhere above, or a name that is not
      a string.
    ValueError: no columns, columns of different lengths, a null value, a
      `rows_per_record` below 1, or two features under the same key.
  """
  if isinstance(rows_per_record, bool) or not isinstance(rows_per_record, (int, np.integer)):
    raise TypeError(f"rows_per_record must be an int, got {rows_per_record!r}")
  if rows_per_record < 1:
    raise ValueError(f"rows_per_record must be >= 1, got {rows_per_record}")
  rows_per_record = int(rows_per_record)
  features = _check_columns(columns, rows_per_record)
  rows = len(features[0][2])
  batch = max(1, BATCH_ROWS // rows_per_record) * rows_per_record
  records: List[bytes] = []
  for start in range(0, rows, batch):
    stop = min(start + batch, rows)
    records.extend(_encode_batch(
        [(key, kind, values[start:stop]) for key, kind, values in features],
        stop - start, rows_per_record))
  return records


def _check_columns(columns: Dict[str, Column],
                   rows_per_record: int) -> List[Tuple[bytes, str, Column]]:
  """The columns as (key, kind, values) in key order, with each multivalent column's lengths
  as a column of its own; kinds "bytes", "list", "float", "int64"."""
  if not isinstance(columns, dict) or not columns:
    raise ValueError(f"columns must be a non-empty dict of name -> values, got {columns!r}")
  features, lengths = [], {}
  for name, values in columns.items():
    if not isinstance(name, str):
      raise TypeError(f"a column name must be a str, got {name!r}")
    kind, values = _kind(name, values)
    lengths[name] = len(values)
    features.append((name, kind, values))
    if kind == "list" and rows_per_record > 1:
      row_lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
      features.append((row_lengths_key(name), "int64", row_lengths.astype(np.int64)))
  if len(set(lengths.values())) > 1:
    raise ValueError(f"columns must hold the same number of rows, got {lengths}")
  keys = [name for name, _, _ in features]
  clash = next((key for key in keys if keys.count(key) > 1), None)
  if clash is not None:
    raise ValueError(f"two features would be written under the key {clash!r}: a column of that "
                     "name and a multivalent column's row lengths")
  features = [(name.encode("utf-8"), kind, values) for name, kind, values in features]
  return sorted(features, key=lambda feature: _map_order(feature[0]))


def _map_order(key: bytes) -> bytes:
  """Sort key of a map key in protobuf's deterministic serialization, as the installed runtime
  writes it.

  The C++ and pure Python runtimes order string keys by their bytes, a key
  before the longer keys it begins (`uid` before `uid#row_lengths`). upb,
  the default runtime since protobuf 4.21, sorts the other way round and
  builds its output backwards: by bytes too, but a key *after* the longer
  keys it begins. Appending 0xFF, which UTF-8 never holds, gives that order.
  """
  return key + b"\xff" if _RUNTIME == "upb" else key


def _kind(name: str, values: Column) -> Tuple[str, Column]:
  """(kind, values converted to what `_encode_batch` takes) of one column."""
  if isinstance(values, pa.ChunkedArray):
    values = values.combine_chunks()
  if isinstance(values, np.ndarray):
    if values.ndim != 1:
      raise TypeError(f"column '{name}': a numpy column must be 1-D, got shape {values.shape}")
    if np.issubdtype(values.dtype, np.floating):
      # Through a double, as a Python float into the message: that quiets a signaling NaN.
      with np.errstate(invalid="ignore", over="ignore"):
        return "float", values.astype(np.float32).astype(np.float64).astype(np.float32)
    if np.issubdtype(values.dtype, np.integer):
      if values.dtype == np.uint64 and len(values) and values.max() > np.iinfo(np.int64).max:
        raise ValueError(f"column '{name}': {values.max()} does not fit an int64")
      return "int64", np.ascontiguousarray(values, dtype=np.int64)
    raise TypeError(f"column '{name}': a numpy column must hold floats or integers, got "
                    f"{values.dtype}")
  if not isinstance(values, pa.Array):
    raise TypeError(f"column '{name}': expected a pyarrow array or a numpy array, got "
                    f"{type(values).__name__}")
  if values.null_count:
    raise ValueError(f"column '{name}': {values.null_count} null value(s); write a missing "
                     "string as \"\" and a missing list as an empty list")
  if _is_bytes(values.type):
    return "bytes", values.cast(pa.large_binary())
  if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
    if _is_bytes(values.type.value_type):
      values = values.cast(pa.large_list(pa.large_binary()))
      if values.flatten().null_count:
        raise ValueError(f"column '{name}': a list holds a null value; leave it out or write "
                         "it as \"\"")
      return "list", values
  raise TypeError(f"column '{name}': expected strings, binaries or lists of them, got "
                  f"{values.type}")


def _is_bytes(dtype: pa.DataType) -> bool:
  return (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
          or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype))


def _encode_batch(features: Sequence[Tuple[bytes, str, Column]], rows: int,
                  rows_per_record: int) -> List[bytes]:
  """The records of `rows` rows (all of one batch), as in `encode_records`."""
  bounds = np.append(np.arange(0, rows, rows_per_record, dtype=np.int64), rows)
  headers, payloads, entry_sizes = [], [], []
  for key, kind, values in features:
    if kind in ("bytes", "list"):
      value_bounds = bounds
      if kind == "list":
        list_offsets = _offsets(values)  # a large list's offsets are int64 too
        value_bounds = (list_offsets - list_offsets[0])[bounds]
        values = values.flatten()
      buffer, offsets = _framed(values)
      payload_bounds = offsets[value_bounds]
    elif kind == "float":
      buffer, payload_bounds = values.view(np.uint8), bounds * 4
    else:
      buffer, offsets = _packed_varints(values)
      payload_bounds = offsets[bounds]
    list_size = np.diff(payload_bounds)
    list_header = []
    if kind in ("float", "int64"):  # packed: 0x0A varint(size) values, absent when empty
      groups, lengths = _varints(list_size)
      packed = (np.concatenate([np.full((len(list_size), 1), 0x0A, np.uint8), groups], axis=1),
                np.where(list_size > 0, 1 + lengths, 0))
      list_header = [packed]
      list_size = list_size + packed[1]
    feature_size = 1 + _varint_length(list_size) + list_size
    key_part = b"\x0a" + _varint_bytes(len(key)) + key + b"\x12"
    entry_size = len(key_part) + _varint_length(feature_size) + feature_size
    headers.append([b"\x0a", _varints(entry_size), key_part, _varints(feature_size),
                    bytes([_TAGS[kind]]), _varints(list_size)] + list_header)
    payloads.append(_binary_array(buffer, payload_bounds))
    entry_sizes.append(1 + _varint_length(entry_size) + entry_size)
  headers[0][:0] = [b"\x0a", _varints(np.sum(entry_sizes, axis=0))]
  joined = []
  for header, payload in zip(headers, payloads):
    joined += [_binary_array(*_strings(header, len(bounds) - 1)), payload]
  return pc.binary_join_element_wise(*joined, _EMPTY).to_pylist()


def _binary_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
  """A large binary array of data[offsets[i]:offsets[i + 1]], not copying `data`."""
  return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1,
                               [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _offsets(values: pa.Array) -> np.ndarray:
  """The int64 offsets of a large binary or large list array's elements."""
  offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)
  return offsets[values.offset:values.offset + len(values) + 1]


def _starts(lengths: np.ndarray) -> np.ndarray:
  """Offsets [n + 1] of strings of `lengths`, one after the other."""
  offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
  np.cumsum(lengths, out=offsets[1:])
  return offsets


def _framed(values: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
  """(buffer, offsets [n + 1]) of large binary values as BytesList elements, each
  0x0A varint(length) value, one after the other."""
  offsets = _offsets(values)
  lengths = np.diff(offsets)
  if not len(lengths) or lengths.max() < 0x80:  # a one-byte length each: pyarrow inserts them
    framed = pc.binary_replace_slice(values, start=0, stop=0, replacement=b"\x0a\x00")
    starts = _offsets(framed)
    out = np.frombuffer(framed.buffers()[2], dtype=np.uint8)[starts[0]:starts[-1]].copy()
    starts = starts - starts[0]
    out[starts[:-1] + 1] = lengths
    return out, starts
  data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
  groups, varint_lengths = _varints(lengths)
  starts = _starts(lengths + varint_lengths + 1)
  out = np.empty(starts[-1], dtype=np.uint8)
  is_value = np.ones(len(out), dtype=bool)
  at = starts[:-1]
  out[at] = 0x0A
  is_value[at] = False
  for i in range(groups.shape[1]):  # the length's varint, byte by byte
    has = varint_lengths > i
    out[at[has] + 1 + i] = groups[has, i]
    is_value[at[has] + 1 + i] = False
  out[is_value] = data
  return out, starts


def _packed_varints(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(buffer, offsets [n + 1]) of int64 values as varints, one after the other."""
  if len(values) and values.min() >= 0 and values.max() < 0x80:  # one byte each (0/1 labels)
    return values.astype(np.uint8), np.arange(len(values) + 1, dtype=np.int64)
  groups, lengths = _varints(values)
  return _strings([(groups, lengths)], len(values))


def _varint_length(values: np.ndarray) -> np.ndarray:
  """Bytes of each int64 value's varint (10 for a negative one)."""
  unsigned = np.asarray(values, dtype=np.int64).view(np.uint64)
  lengths = np.ones(unsigned.shape, dtype=np.int64)
  for shift in range(7, 64, 7):
    longer = unsigned >= np.uint64(1 << shift)
    if not longer.any():
      break
    lengths += longer
  return lengths


def _varints(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(groups [n, width] uint8, lengths [n]) of int64 values as base-128 varints: value i's
  bytes are groups[i, :lengths[i]], least significant group first."""
  unsigned = np.asarray(values, dtype=np.int64).view(np.uint64)
  lengths = _varint_length(values)
  width = int(lengths.max()) if len(lengths) else 1
  if width == 1:
    return unsigned.astype(np.uint8)[:, None], lengths
  groups = ((unsigned[:, None] >> np.arange(0, 7 * width, 7, dtype=np.uint64))
            & np.uint64(0x7F)).astype(np.uint8)
  groups[np.arange(width) < lengths[:, None] - 1] |= 0x80  # more groups follow
  return groups, lengths


def _varint_bytes(value: int) -> bytes:
  groups, lengths = _varints(np.array([value], dtype=np.int64))
  return groups[0, :lengths[0]].tobytes()


def _strings(parts: Sequence[Union[bytes, Tuple[np.ndarray, np.ndarray]]],
             rows: int) -> Tuple[np.ndarray, np.ndarray]:
  """(data, offsets [rows + 1]) of `rows` byte strings, each its parts one after the other.

  A part is bytes, the same in every string, or (bytes [rows, width],
  lengths [rows]): string i takes the first lengths[i] bytes of its row.
  """
  widths = [len(p) if isinstance(p, bytes) else p[0].shape[1] for p in parts]
  matrix = np.empty((rows, sum(widths)), dtype=np.uint8)
  lengths, mask, column = np.zeros(rows, dtype=np.int64), None, 0
  for part, width in zip(parts, widths):
    columns = slice(column, column + width)
    if isinstance(part, bytes):
      matrix[:, columns] = np.frombuffer(part, dtype=np.uint8)
      lengths += width
    else:
      matrix[:, columns] = part[0]
      lengths += part[1]
      if rows and part[1].min() < width:  # some strings take fewer bytes of this part
        if mask is None:
          mask = np.ones(matrix.shape, dtype=bool)
        mask[:, columns] = np.arange(width) < part[1][:, None]
    column += width
  return (matrix.ravel() if mask is None else matrix[mask]), _starts(lengths)


# Reading: the same records parsed back into rows, in tf.data pipelines.

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


def parse_blocks(schema: Schema, serialized: tf.Tensor, split: str) -> Dict[str, tf.Tensor]:
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
