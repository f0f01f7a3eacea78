"""stem_tfrs.data.records: shard records encoded as arrays, byte for byte the messages' serialization.

Hand-checked records first, then random columns compared with a reference
that builds each `tf.train.Example` as `data_prep.writer` does, then the
writer's own shard, then the records parsed back by TensorFlow.
"""

import itertools

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from google.protobuf.internal import api_implementation

from stem_tfrs.data import records
from stem_tfrs.data.records import encode_records
from data_prep.writer import _ShardWriter
from stem_tfrs.data.records import parse_records
from stem_tfrs.data.schema import CategoricalFeature, NumericFeature, Schema, row_lengths_key


def reference(columns, kinds, rows_per_record):
  """The records as `data_prep.writer._ShardWriter._write_record` builds them: one message a
  block, value by value. `kinds`: name -> "bytes", "list", "float" or "int64"; columns hold
  Python values (bytes, lists of bytes, floats, ints)."""
  rows = len(next(iter(columns.values())))
  out = []
  for start in range(0, rows, rows_per_record):
    example = tf.train.Example()
    feature = example.features.feature
    for name, values in columns.items():
      taken = values[start:start + rows_per_record]
      if kinds[name] == "bytes":
        feature[name].bytes_list.value.extend(taken)
      elif kinds[name] == "list":
        feature[name].bytes_list.SetInParent()
        feature[name].bytes_list.value.extend(itertools.chain.from_iterable(taken))
        if rows_per_record > 1:
          feature[row_lengths_key(name)].int64_list.value.extend(map(len, taken))
      elif kinds[name] == "float":
        feature[name].float_list.value.extend(taken)
      else:
        feature[name].int64_list.value.extend(taken)
    out.append(example.SerializeToString(deterministic=True))
  return out


def as_python(column):
  """A column as the Python values the writer's messages take."""
  if isinstance(column, np.ndarray):
    return column.tolist()
  values = column.to_pylist()
  return [[v.encode() if isinstance(v, str) else v for v in row] if isinstance(row, list)
          else row.encode() if isinstance(row, str) else row for row in values]


def kind_of(column):
  if isinstance(column, np.ndarray):
    return "float" if column.dtype.kind == "f" else "int64"
  dtype = column.type
  return "list" if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) else "bytes"


def assert_same_as_messages(columns, rows_per_record):
  expected = reference({n: as_python(c) for n, c in columns.items()},
                       {n: kind_of(c) for n, c in columns.items()}, rows_per_record)
  got = encode_records(columns, rows_per_record)
  assert len(got) == len(expected)
  for i, (a, b) in enumerate(zip(got, expected)):
    assert a == b, f"record {i} differs:\n{a[:300]!r}\n{b[:300]!r}"
  return got


# Hand-checked records.

def test_one_value_is_example_features_entry_feature_bytes_list():
  # Example{features{feature{key: "a" value{bytes_list{value: "x"}}}}}
  assert encode_records({"a": pa.array(["x"])}, 64) == [
      b"\x0a\x0c"                # Example.features, 12 bytes
      b"\x0a\x0a"                # Features.feature (a map entry), 10 bytes
      b"\x0a\x01a"               # entry key "a"
      b"\x12\x05"                # entry value, a Feature of 5 bytes
      b"\x0a\x03"                # Feature.bytes_list, 3 bytes
      b"\x0a\x01x"]              # BytesList.value "x"


def test_int64_and_float_lists_are_packed():
  got = encode_records({"like": np.array([1, 0, 300]), "t": np.ones(3, np.float32)},
                       3)
  like = b"\x0a\x04\x01\x00\xac\x02"  # packed: 4 bytes of varints 1, 0, 300 (0xAC 0x02)
  t = b"\x0a\x0c" + np.array([1.0] * 3, "<f4").tobytes()
  entry_like = b"\x0a\x04like\x12\x08\x1a\x06" + like
  entry_t = b"\x0a\x01t\x12\x10\x12\x0e" + t
  features = b"\x0a" + bytes([len(entry_like)]) + entry_like + b"\x0a" + bytes(
      [len(entry_t)]) + entry_t
  assert got == [b"\x0a" + bytes([len(features)]) + features]


def test_a_negative_int64_takes_ten_bytes():
  (record,) = encode_records({"v": np.array([-1])}, 1)
  assert record.endswith(b"\x1a\x0c\x0a\x0a" + b"\xff" * 9 + b"\x01")


def test_value_lengths_from_127_bytes_take_multibyte_varints():
  values = [b"v" * n for n in (127, 128, 300, 20000)]
  got = encode_records({"a": pa.array(values, pa.binary())}, 1)
  for value, record in zip(values, got):
    head = {127: b"\x0a\x7f", 128: b"\x0a\x80\x01", 300: b"\x0a\xac\x02",
            20000: b"\x0a\xa0\x9c\x01"}[len(value)]
    assert record.endswith(head + value)
  assert_same_as_messages({"a": pa.array(values, pa.binary())}, 3)


def test_an_empty_list_is_a_present_empty_bytes_list_with_its_length():
  (record,) = encode_records({"g": pa.array([[]], pa.list_(pa.string()))}, 64)
  # the lengths' key sorts as the runtime orders map keys (see records._map_order)
  entries = [b"\x0a\x16\x0a\x0dg#row_lengths\x12\x05\x1a\x03\x0a\x01\x00",
             b"\x0a\x07\x0a\x01g\x12\x02\x0a\x00"]
  if api_implementation.Type() != "upb":
    entries.reverse()
  assert record == b"\x0a\x21" + b"".join(entries)
  # one row a record: the list alone, no lengths
  assert encode_records({"g": pa.array([[]], pa.list_(pa.string()))}, 1) == [
      b"\x0a\x09\x0a\x07\x0a\x01g\x12\x02\x0a\x00"]


def test_keys_are_in_the_runtimes_deterministic_map_order():
  columns = {"g": pa.array([["a"]], pa.list_(pa.string())), "g_": pa.array(["b"]),
             "G": pa.array(["c"]), "f": np.array([1])}
  (record,) = assert_same_as_messages(columns, 2)
  upb = api_implementation.Type() == "upb"
  order = (["G", "f", "g#row_lengths", "g_", "g"] if upb  # a key after the keys it begins
           else ["G", "f", "g", "g#row_lengths", "g_"])
  assert [record.index(b"\x0a" + bytes([len(k)]) + k.encode() + b"\x12") for k in order] == sorted(
      record.index(b"\x0a" + bytes([len(k)]) + k.encode() + b"\x12") for k in order)


def test_blocks_of_rows_the_last_one_shorter():
  got = encode_records({"a": pa.array([str(i) for i in range(7)]), "y": np.arange(7)}, 3)
  assert len(got) == 3
  parsed = [tf.train.Example.FromString(r).features.feature for r in got]
  assert [list(p["a"].bytes_list.value) for p in parsed] == [[b"0", b"1", b"2"],
                                                             [b"3", b"4", b"5"], [b"6"]]
  assert [list(p["y"].int64_list.value) for p in parsed] == [[0, 1, 2], [3, 4, 5], [6]]


def test_no_rows_no_records():
  assert encode_records({"a": pa.array([], pa.string()), "y": np.array([], np.int64)}, 64) == []


# Random columns against the messages.

def random_columns(rng, rows):
  alphabet = np.array(list("ab\u00e9\u4e2d\U0001f600_ "))  # 1- to 4-byte characters

  def text(n):
    return "".join(alphabet[rng.integers(0, len(alphabet), n)])

  def length():
    return int(rng.choice([0, 1, 5, 127, 128, 300, 20000], p=[.1, .3, .3, .1, .1, .07, .03]))

  uid = [text(length()) for _ in range(rows)]
  genres = [[text(length()).encode() for _ in range(rng.choice([0, 1, 2, 9]))]
            for _ in range(rows)]
  duration = rng.normal(size=rows).astype(np.float32)
  specials = np.array([np.nan, np.inf, -np.inf, -0.0, np.float32(1e-45)], np.float32)
  duration[rng.random(rows) < 0.3] = rng.choice(specials)
  signaling_nan = np.array([0x7F800001, 0xFFC00001], np.uint32).view(np.float32)  # signaling NaNs
  duration[rng.random(rows) < 0.05] = signaling_nan[0]
  return {
      "uid": pa.array(uid, pa.string()),
      "item": pa.array([str(i % 1000).encode() for i in rng.integers(0, 10**6, rows)],
                       pa.large_binary()),
      "genres": pa.array(genres, pa.list_(pa.binary())),
      "duration": duration,
      "big": rng.integers(-2**63, 2**63 - 1, rows, dtype=np.int64),
      "finish": rng.integers(0, 2, rows),
      "like": rng.integers(0, 2, rows),
  }


@pytest.mark.parametrize("rows_per_record", [1, 3, 64])
@pytest.mark.parametrize("rows", [1, 200])
def test_random_columns_are_encoded_as_the_messages_serialize(rows_per_record, rows):
  rng = np.random.default_rng([rows_per_record, rows])
  assert_same_as_messages(random_columns(rng, rows), rows_per_record)


def test_batches_chunked_and_sliced_columns(monkeypatch):
  monkeypatch.setattr(records, "BATCH_ROWS", 10)  # batches of 9 rows at 3 a record
  columns = random_columns(np.random.default_rng(1), 130)
  sliced = {n: c[5:105] for n, c in columns.items()}  # arrow arrays at an offset
  sliced["uid"] = pa.chunked_array([sliced["uid"][:33], sliced["uid"][33:]])
  sliced["genres"] = sliced["genres"].cast(pa.large_list(pa.string()))
  sliced["finish"] = columns["finish"][::-1][:100]  # a numpy view with a negative stride
  got = encode_records(sliced, 3)
  expected = reference({n: as_python(pa.chunked_array(c.chunks).combine_chunks()
                                     if isinstance(c, pa.ChunkedArray) else c)
                        for n, c in sliced.items()},
                       {n: kind_of(c) for n, c in columns.items()}, 3)
  assert got == expected
  monkeypatch.setattr(records, "BATCH_ROWS", 1 << 17)
  assert encode_records(sliced, 3) == got


def test_floats_of_other_widths_and_ints_of_other_widths_as_the_writer_converts_them():
  values = np.array([0.1, 1e300, -1e-300, np.nan])  # the large one a float32 infinity
  got = encode_records({"x": values, "y": np.array([1, 2, 3, 200], np.uint8)}, 2)
  with np.errstate(over="ignore"):
    as_writer = values.astype(np.float32).tolist()
  assert got == reference({"x": as_writer, "y": [1, 2, 3, 200]}, {"x": "float", "y": "int64"}, 2)


def test_same_bytes_as_the_writers_shard(tmp_path):
  rng = np.random.default_rng(5)
  columns = random_columns(rng, 150)
  del columns["big"]
  path = str(tmp_path / "shard.tfrecord")
  writer = _ShardWriter(path, ["uid", "item", "genres"], ["finish", "like"], {"genres": "|"}, 64,
                        numeric=["duration"])
  python = {n: as_python(c) for n, c in columns.items()}
  for start in (0, 40, 130):  # the writer keeps the rows short of a record for the next call
    writer.write({n: v[start:start + {0: 40, 40: 90, 130: 20}[start]] for n, v in python.items()})
  writer.close()
  written = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  assert len(written) == 3
  assert encode_records(columns, 64) == written


# Read back by TensorFlow.

@pytest.mark.parametrize("rows_per_record", [1, 3, 64])
def test_the_projects_parser_reads_back_the_rows(rows_per_record):
  rng = np.random.default_rng(11)
  columns = random_columns(rng, 100)
  del columns["big"]
  schema = Schema(
      features=[CategoricalFeature("uid", hash_buckets=10), CategoricalFeature("item",
                                                                               hash_buckets=10),
                CategoricalFeature("genres", hash_buckets=10, multivalent=True)],
      labels=["finish", "like"], rows_per_record=rows_per_record,
      numeric_features=[NumericFeature("duration")])
  parsed = parse_records(schema, tf.constant(encode_records(columns, rows_per_record)))
  assert parsed["uid"].numpy().tolist() == as_python(columns["uid"])
  assert parsed["item"].numpy().tolist() == as_python(columns["item"])
  assert parsed["genres"].to_list() == as_python(columns["genres"])
  np.testing.assert_array_equal(parsed["duration"].numpy(), columns["duration"])  # NaN == NaN
  for label in ("finish", "like"):
    assert parsed[label].numpy().tolist() == columns[label].tolist()


def test_parse_example_reads_back_any_int64():
  values = np.array([0, 1, -1, 2**63 - 1, -2**63, 127, 128, 16383, 16384])
  parsed = tf.io.parse_example(tf.constant(encode_records({"v": values}, 4)),
                               {"v": tf.io.RaggedFeature(tf.int64)})
  assert parsed["v"].flat_values.numpy().tolist() == values.tolist()


# Refusals.

@pytest.mark.parametrize("columns,rows_per_record,error,says", [
    ({}, 64, ValueError, "non-empty dict"),
    ({"a": pa.array(["x"])}, 0, ValueError, "rows_per_record must be >= 1, got 0"),
    ({"a": pa.array(["x"])}, 2.0, TypeError, "rows_per_record must be an int, got 2.0"),
    ({"a": pa.array(["x", None])}, 64, ValueError, "column 'a': 1 null value"),
    ({"g": pa.array([["x", None]])}, 64, ValueError, "column 'g': a list holds a null"),
    ({"a": pa.array(["x"]), "y": np.array([1, 0])}, 64, ValueError,
     "same number of rows, got {'a': 1, 'y': 2}"),
    ({"a": pa.array([1])}, 64, TypeError, "column 'a': expected strings, binaries or lists"),
    ({"a": np.array(["x"])}, 64, TypeError, "column 'a': a numpy column must hold"),
    ({"a": np.zeros((2, 2))}, 64, TypeError, "must be 1-D, got shape (2, 2)"),
    ({"a": ["x"]}, 64, TypeError, "column 'a': expected a pyarrow array or a numpy array, got list"),
    ({1: pa.array(["x"])}, 64, TypeError, "a column name must be a str, got 1"),
    ({"g": pa.array([["x"]]), "g#row_lengths": np.array([1])}, 2, ValueError,
     "under the key 'g#row_lengths'"),
    ({"y": np.array([2**64 - 1], np.uint64)}, 64, ValueError, "does not fit an int64"),
])
def test_refuses_what_it_cannot_encode_saying_what(columns, rows_per_record, error, says):
  with pytest.raises(error) as raised:
    encode_records(columns, rows_per_record)
  assert says in str(raised.value)
