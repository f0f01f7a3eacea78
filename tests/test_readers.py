"""data_prep.readers: the pyarrow block reader reads every line as the Python line parser does.

The reference is the line-by-line reader the block reader replaced, kept here
verbatim (`python_read_delimited`): on randomized files full of anomalies
(blank lines, wrong field counts, quoting of every kind, bare carriage
returns, CRLF, a byte-order mark, no final line feed) and with blocks so small
that anomalies straddle their edges, both must give the same rows, line
numbers and bad-row reports.
"""

import csv
import gzip
import itertools
import os
import shutil
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from data_prep import readers
from data_prep.readers import check_file, list_inputs, read_blocks, read_delimited
from data_prep.writer import BadRows, DataError


# The reader before the block reader (data_prep/readers.py as it was), the reference.
def python_read_delimited(path, *, sep, columns=None, required=(), bad_rows,
                          chunk_rows=200_000, encoding="utf-8-sig"):
  try:
    yield from _read_lines(path, sep, columns, required, bad_rows, chunk_rows, encoding)
  except UnicodeDecodeError:
    raise readers.decode_error(path, encoding) from None


def _parse_line(line, sep, width):
  text = line.rstrip("\r\n")
  if "\r" in text:
    return None, ("line break inside a field", "a carriage return inside the line")
  fields = _split_line(text, sep)
  if len(fields) == width:
    return fields, None
  if text.strip():
    return None, ("wrong column count", f"{len(fields)} fields, expected {width}")
  return None, None


def _split_line(line, sep):
  line = line.rstrip("\r\n")
  if '"' in line and len(sep) == 1:
    return next(csv.reader([line], delimiter=sep), [])
  return line.split(sep)


def _read_lines(path, sep, columns, required, bad_rows, chunk_rows, encoding):
  with open(path, encoding=encoding, newline="\n") as f:
    first_line = 1
    if columns is None:
      columns = _split_line(f.readline(), sep)
      first_line = 2
    columns = list(columns)
    missing = [c for c in required if c not in columns]
    if missing:
      hint = (f" (the header is one field when split at {sep!r}: is the separator right?)"
              if len(columns) == 1 else "")
      raise DataError(f"{path}: missing column(s) {missing}; found {columns}{hint}")
    repeated = sorted({c for c in required if columns.count(c) > 1})
    if repeated:
      raise DataError(f"{path}: the header names column(s) {repeated} more than once")
    width = len(columns)
    while True:
      lines = list(itertools.islice(f, chunk_rows))
      if not lines:
        break
      rows = []
      for offset, line in enumerate(lines):
        fields, problem = _parse_line(line, sep, width)
        if problem:
          bad_rows.add(problem[0], path, first_line + offset, problem[1])
        rows.append(fields)
      frame = pd.DataFrame([r for r in rows if r is not None], columns=columns, dtype=object)
      frame.index = [first_line + i for i, r in enumerate(rows) if r is not None]
      yield frame
      first_line += len(lines)


VALUES = ["", "a", "bb", "12", "x y", "\u00fc", "\u65e5\u672c", "\U0001f600", " ", "0.5"]


def random_line(rng, width, sep):
  """One raw line (no line feed), well-formed or not."""
  values = [VALUES[i] for i in rng.integers(0, len(VALUES), width)]
  kind = rng.random()
  if kind < 0.04:
    return ""  # blank
  if kind < 0.06:
    return rng.choice([" ", "  ", "\t", " \t "])  # blank but for spaces
  if kind < 0.10:
    return sep.join(values[:-1] if rng.random() < 0.5 else values + ["extra"])
  if kind < 0.13:
    values[rng.integers(0, width)] = "a\rb"  # a bare carriage return
  elif kind < 0.25:  # quoted as CSV writers quote
    at = rng.integers(0, width)
    values[at] = '"' + rng.choice(["a" + sep + "b", 'say ""hi""', "", sep, "x y"]) + '"'
  elif kind < 0.32:  # quoting Python's csv and pyarrow may read differently
    values[rng.integers(0, width)] = rng.choice(['"ab', '"ab"c', 'a"b', ' "a"', '"a"b"c"',
                                                 '"a""', '"', '""""'])
  return sep.join(values)


def write_random(path, rng, width, sep, rows, header=True):
  """A file of `rows` random lines; returns its column names."""
  names = [f"c{i}" for i in range(width)]
  lines = [sep.join(names)] if header else []
  lines += [random_line(rng, width, sep) for _ in range(rows)]
  endings = rng.choice(["\n", "\r\n", "\r\r\n"], len(lines), p=[0.85, 0.13, 0.02])
  text = "".join(line + end for line, end in zip(lines, endings))
  if rng.random() < 0.5:
    text = text.rstrip("\r\n")  # no final line feed
  data = text.encode()
  if rng.random() < 0.5:
    data = b"\xef\xbb\xbf" + data
  path.write_bytes(data)
  return names


def python_rows(path, **kwargs):
  """(frame of every row, bad rows) as the reference reads `path`."""
  bad = BadRows()
  frames = list(python_read_delimited(str(path), bad_rows=bad, **kwargs))
  return (pd.concat(frames) if frames else None), bad


def block_rows(raw, **kwargs):
  """(frame of every row, line numbers, sources, bad rows) as read_blocks reads `raw`."""
  bad = BadRows()
  blocks = list(read_blocks(str(raw), bad_rows=bad, **kwargs))
  for block in blocks:
    assert block.lines.dtype == np.int64 and len(block.lines) == block.table.num_rows > 0
    for column in block.table.columns:
      assert column.type == pa.string() and column.null_count == 0
  frame = pd.concat([b.table.to_pandas().astype(object) for b in blocks]) if blocks else None
  lines = np.concatenate([b.lines for b in blocks]) if blocks else np.zeros(0, np.int64)
  sources = [b.source for b in blocks for _ in range(b.table.num_rows)]
  return frame, lines, sources, bad


def same_reports(bad, expected):
  assert dict(bad.counts) == dict(expected.counts)
  assert dict(bad.examples) == dict(expected.examples)


CASES = [  # (seed, width, sep, header)
    (0, 4, "\t", False), (1, 4, ",", True), (2, 3, ",", False), (3, 12, "\t", True),
    (4, 1, ",", True), (5, 2, "|", True), (6, 5, ",", True), (7, 1, "\t", False),
]


@pytest.mark.parametrize("seed,width,sep,header", CASES)
@pytest.mark.parametrize("block_bytes", [1, 97, 4096, readers.BLOCK_BYTES])
def test_random_files_give_the_rows_lines_and_reports_of_the_python_parser(
    tmp_path, monkeypatch, seed, width, sep, header, block_bytes):
  monkeypatch.setattr(readers, "_PYTHON_LINES", 3)  # pyarrow on all but the smallest pieces
  rng = np.random.default_rng(seed)
  path = tmp_path / "raw.txt"
  names = write_random(path, rng, width, sep, rows=600, header=header)
  kwargs = dict(sep=sep, columns=None if header else names)
  expected, expected_bad = python_rows(path, **kwargs)
  frame, lines, sources, bad = block_rows(path, block_bytes=block_bytes, **kwargs)
  assert expected_bad.total > 0 and len(expected) > 300
  assert frame.values.tolist() == expected.values.tolist()
  assert list(frame.columns) == list(expected.columns) == names
  assert lines.tolist() == list(expected.index)
  assert set(sources) == {str(path)}
  same_reports(bad, expected_bad)


@pytest.mark.parametrize("seed,width,sep,header", CASES[:4])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_read_delimited_gives_the_chunks_of_the_python_parser(
    tmp_path, monkeypatch, seed, width, sep, header, chunk_rows):
  monkeypatch.setattr(readers, "_PYTHON_LINES", 3)
  rng = np.random.default_rng(seed)
  path = tmp_path / "raw.txt"
  names = write_random(path, rng, width, sep, rows=300, header=header)
  kwargs = dict(sep=sep, columns=None if header else names, chunk_rows=chunk_rows)
  expected_bad, bad = BadRows(), BadRows()
  expected = list(python_read_delimited(str(path), bad_rows=expected_bad, **kwargs))
  chunks = list(read_delimited(str(path), bad_rows=bad, block_bytes=50, **kwargs))
  assert len(chunks) == len(expected)  # the same lines in each chunk: splits seeded per chunk
  for chunk, old in zip(chunks, expected):
    assert chunk.source == str(path)
    assert chunk.frame.values.tolist() == old.values.tolist()
    assert list(chunk.frame.index) == list(old.index)
    assert list(chunk.frame.columns) == names
    assert all(dtype == "str" for dtype in chunk.frame.dtypes)
  same_reports(bad, expected_bad)


def test_bad_rows_are_reported_just_before_the_chunk_holding_them(tmp_path):
  lines = ["a,b"] + [f"{i},x" for i in range(20)]
  lines[5] = "short"
  lines[17] = "too,many,fields"
  (tmp_path / "raw.csv").write_text("\n".join(lines) + "\n")
  bad = BadRows()
  seen = []
  for chunk in read_delimited(str(tmp_path / "raw.csv"), sep=",", bad_rows=bad, chunk_rows=5,
                              block_bytes=1 << 20):
    seen.append((chunk.frame.index[0], bad.total))
  # Lines 2-6, 7-11, 12-16, 17-21: line 6 is reported with the first chunk, 18 with the last.
  assert seen == [(2, 1), (7, 1), (12, 1), (17, 2)]


def test_strict_mode_stops_at_the_first_bad_line_as_before(tmp_path):
  rng = np.random.default_rng(11)
  write_random(tmp_path / "raw.txt", rng, 4, ",", rows=200)
  messages = []
  for read in (python_read_delimited, read_delimited):
    with pytest.raises(DataError) as raised:
      list(read(str(tmp_path / "raw.txt"), sep=",", bad_rows=BadRows(strict=True)))
    messages.append(str(raised.value))
  assert messages[0] == messages[1] and "raw.txt line" in messages[0]


def test_clean_blocks_are_parsed_by_pyarrow_and_anomalies_by_python_near_them(
    tmp_path, monkeypatch):
  lines = [f"u{i}\ti{i % 7}\t{i % 2}" for i in range(20_000)]
  lines[12_345] = "u\tshort"
  (tmp_path / "raw.txt").write_text("\n".join(lines) + "\n")
  parsed_by_python = []
  parse_python = readers._parse_python

  def counting(lines, *args):
    parsed_by_python.append(len(lines))
    return parse_python(lines, *args)
  monkeypatch.setattr(readers, "_parse_python", counting)
  frame, numbers, _, bad = block_rows(tmp_path / "raw.txt", sep="\t", columns=["u", "i", "c"])
  assert len(frame) == 19_999 and bad.examples["wrong column count"] == [
      f"{tmp_path / 'raw.txt'} line 12,346: 2 fields, expected 3"]
  assert numbers[12_345] == 12_347
  assert 0 < sum(parsed_by_python) <= readers._PYTHON_LINES  # only the piece around line 12,346


def test_a_header_that_lacks_or_repeats_a_column_is_refused_as_before(tmp_path):
  (tmp_path / "semi.csv").write_text("a;b;c\n1;2;3\n")
  (tmp_path / "twice.csv").write_text("a,b,a\n1,2,3\n")
  for name, required in (("semi.csv", ["a", "b"]), ("twice.csv", ["a"])):
    messages = []
    for read in (python_read_delimited, read_delimited):
      with pytest.raises(DataError) as raised:
        list(read(str(tmp_path / name), sep=",", required=required, bad_rows=BadRows()))
      messages.append(str(raised.value))
    assert messages[0] == messages[1]
  assert "is the separator right?" in messages[0] or "more than once" in messages[0]


@pytest.mark.parametrize("gzipped", [False, True])
def test_text_that_is_not_utf8_is_refused_naming_its_first_bad_line(tmp_path, gzipped):
  lines = [f"{i},x" for i in range(5_000)]
  data = "\n".join(lines).encode().replace(b"4321,x", b"4321,\xe9")
  path = tmp_path / ("raw.csv.gz" if gzipped else "raw.csv")
  path.write_bytes(gzip.compress(data) if gzipped else data)
  with pytest.raises(DataError, match=r"raw\.csv(\.gz)? line 4,322: not utf-8 text "
                                      r"\(byte b'\\xe9' at column 6\)"):
    list(read_blocks(str(path), sep=",", columns=["n", "v"], bad_rows=BadRows(),
                     block_bytes=1000))


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16"])
def test_other_encodings_read_as_before(tmp_path, monkeypatch, encoding):
  monkeypatch.setattr(readers, "_PYTHON_LINES", 3)
  rng = np.random.default_rng(5)
  write_random(tmp_path / "utf8.txt", rng, 3, "|", rows=300)
  text = (tmp_path / "utf8.txt").read_text(encoding="utf-8-sig").replace("\U0001f600", "?")
  text = text.replace("\u65e5\u672c", "\u00e9\u00e8")
  (tmp_path / "raw.txt").write_bytes(text.encode(encoding))
  expected, expected_bad = python_rows(tmp_path / "raw.txt", sep="|", encoding=encoding)
  frame, lines, _, bad = block_rows(tmp_path / "raw.txt", sep="|", encoding=encoding,
                                    block_bytes=200)
  assert frame.values.tolist() == expected.values.tolist()
  assert lines.tolist() == list(expected.index)
  same_reports(bad, expected_bad)


def test_a_separator_of_two_characters_reads_as_before(tmp_path):
  (tmp_path / "ratings.dat").write_text("1::10::5\n2::11\n\n3::\"12\"::4\r\n4::13::3")
  expected, expected_bad = python_rows(tmp_path / "ratings.dat", sep="::", columns="abc")
  frame, lines, _, bad = block_rows(tmp_path / "ratings.dat", sep="::", columns="abc")
  assert frame.values.tolist() == expected.values.tolist() == [
      ["1", "10", "5"], ["3", '"12"', "4"], ["4", "13", "3"]]
  assert lines.tolist() == [1, 4, 5]
  same_reports(bad, expected_bad)


def test_gzip_reads_as_the_plain_file(tmp_path):
  rng = np.random.default_rng(3)
  names = write_random(tmp_path / "raw.txt", rng, 4, "\t", rows=500, header=False)
  (tmp_path / "raw.txt.gz").write_bytes(gzip.compress((tmp_path / "raw.txt").read_bytes()))
  plain = block_rows(tmp_path / "raw.txt", sep="\t", columns=names)
  zipped = block_rows(tmp_path / "raw.txt.gz", sep="\t", columns=names, block_bytes=300)
  assert zipped[0].values.tolist() == plain[0].values.tolist()
  assert zipped[1].tolist() == plain[1].tolist()
  assert dict(zipped[3].counts) == dict(plain[3].counts)
  check_file(str(tmp_path / "raw.txt.gz"), compressed_ok=True)
  with pytest.raises(DataError, match=r"raw\.txt\.gz is gzip-compressed; decompress it first"):
    check_file(str(tmp_path / "raw.txt.gz"))  # for callers that open the file themselves


def test_damaged_gzip_is_a_one_line_error_naming_the_file(tmp_path):
  data = gzip.compress(("\n".join(f"{i},x" for i in range(50_000)) + "\n").encode())
  (tmp_path / "cut.csv.gz").write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError,
                     match=r"cut\.csv\.gz: damaged gzip data \(Compressed file ended"):
    list(read_blocks(str(tmp_path / "cut.csv.gz"), sep=",", columns=["n", "v"],
                     bad_rows=BadRows()))
  (tmp_path / "nothing.csv.gz").write_bytes(gzip.compress(b""))
  with pytest.raises(DataError, match=r"nothing\.csv\.gz holds no text"):
    list(read_delimited(str(tmp_path / "nothing.csv.gz"), sep=",", bad_rows=BadRows()))


def test_parquet_columns_read_as_the_text_a_delimited_export_holds(tmp_path):
  table = pa.table({
      "id": pa.array([7, None, -3], pa.int64()),
      "score": pa.array([7.0, float("nan"), 0.1], pa.float64()),
      "small": pa.array([1.5, None, 2.0], pa.float32()),
      "flag": pa.array([True, False, None]),
      "name": pa.array(["a", None, ""]),
      "city": pa.array(["x", "y", "x"]).dictionary_encode(),
      "day": pa.array([19000, 19001, None], pa.date32()),
      "raw": pa.array([b"q", None, b"r"], pa.binary()),
  })
  pq.write_table(table, tmp_path / "rows.parquet", row_group_size=2)
  frame, lines, sources, bad = block_rows(tmp_path / "rows.parquet", sep=",", block_bytes=64)
  assert frame.to_dict("list") == {
      "id": ["7", "", "-3"], "score": ["7", "", "0.1"], "small": ["1.5", "", "2"],
      "flag": ["1", "0", ""], "name": ["a", "", ""], "city": ["x", "y", "x"],
      "day": ["2022-01-08", "2022-01-09", ""], "raw": ["q", "", "r"]}
  assert lines.tolist() == [1, 2, 3] and bad.total == 0
  with pytest.raises(DataError, match=r"rows\.parquet: missing column\(s\) \['like'\]"):
    list(read_blocks(str(tmp_path / "rows.parquet"), sep=",", required=["id", "like"],
                     bad_rows=BadRows()))
  pq.write_table(pa.table({"tags": pa.array([["a", "b"]])}), tmp_path / "lists.parquet")
  with pytest.raises(DataError, match=r"lists\.parquet: column 'tags' is list<.*not one value"):
    list(read_blocks(str(tmp_path / "lists.parquet"), sep=",", bad_rows=BadRows()))
  (tmp_path / "cut.parquet").write_bytes((tmp_path / "rows.parquet").read_bytes()[:200])
  with pytest.raises(DataError, match=r"cut\.parquet: not a readable Parquet file"):
    list(read_blocks(str(tmp_path / "cut.parquet"), sep=",", bad_rows=BadRows()))


def cut_in_parts(path, parts, header):
  """`path`'s data lines cut into `parts` pieces: [(header + lines) bytes per part]."""
  lines = path.read_bytes().splitlines(keepends=True)
  head, body = (lines[:1], lines[1:]) if header else ([], lines)
  edges = np.linspace(0, len(body), parts + 1).astype(int)
  return [b"".join(head + body[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def test_a_directory_or_glob_of_part_files_gives_the_rows_of_the_whole_file(tmp_path):
  rng = np.random.default_rng(9)
  whole = tmp_path / "whole.csv"
  lines = ["user,item,click"] + [f"u{rng.integers(0, 9)},i{i},{i % 2}" for i in range(3_000)]
  whole.write_text("\n".join(lines) + "\n")
  expected, _, _, _ = block_rows(whole, sep=",")
  parts = tmp_path / "export"
  parts.mkdir()
  pieces = cut_in_parts(whole, 4, header=True)
  (parts / "part-00000.csv").write_bytes(pieces[0])
  (parts / "part-00001.csv.gz").write_bytes(gzip.compress(pieces[1]))
  (parts / "part-00002.csv").write_bytes(pieces[2])
  (parts / "part-00003.csv").write_bytes(b"")  # an empty partition
  pq.write_table(pacsv.read_csv(pa.py_buffer(pieces[3]), convert_options=pacsv.ConvertOptions(
      column_types={"click": pa.int8()})), parts / "part-00004.parquet")
  for marker in ("_SUCCESS", ".part-00000.csv.crc", "part-00002.csv.crc", "_committed_1"):
    (parts / marker).write_bytes(b"\x00not data")
  (parts / "_temporary").mkdir()
  (parts / "_temporary" / "part-00009.csv").write_text("user,item,click\nzz,zz,1\n")
  assert [os.path.basename(p) for p in list_inputs(str(parts))] == [
      "part-00000.csv", "part-00001.csv.gz", "part-00002.csv", "part-00003.csv",
      "part-00004.parquet"]
  for raw in (parts, str(parts / "part-*")):
    frame, lines, sources, bad = block_rows(raw, sep=",", required=["user", "click"])
    assert frame.values.tolist() == expected.values.tolist() and bad.total == 0
    assert [os.path.basename(s) for s in sources[:1] + sources[-1:]] == [
        "part-00000.csv", "part-00004.parquet"]
    assert lines[0] == 2 and lines[-1] == 750  # the Parquet part's last row number
  shuffled = tmp_path / "copy"
  shutil.copytree(parts, shuffled)  # another directory, other listing order: the same rows
  assert block_rows(shuffled, sep=",")[0].values.tolist() == expected.values.tolist()


def test_header_less_part_files_take_the_given_columns(tmp_path):
  rng = np.random.default_rng(4)
  names = write_random(tmp_path / "whole.txt", rng, 3, "\t", rows=400, header=False)
  data = (tmp_path / "whole.txt").read_bytes()
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  (tmp_path / "whole.txt").write_bytes(data if data.endswith(b"\n") else data + b"\n")
  expected = block_rows(tmp_path / "whole.txt", sep="\t", columns=names)
  (tmp_path / "parts").mkdir()
  for i, piece in enumerate(cut_in_parts(tmp_path / "whole.txt", 3, header=False)):
    (tmp_path / "parts" / f"{i:06d}_0").write_bytes(gzip.compress(piece))  # Hive's names
  frame, _, _, bad = block_rows(tmp_path / "parts", sep="\t", columns=names, block_bytes=100)
  assert frame.values.tolist() == expected[0].values.tolist()
  assert dict(bad.counts) == dict(expected[3].counts)


def test_inputs_that_name_no_data_file_are_refused(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "_SUCCESS").write_text("")
  with pytest.raises(DataError, match=r"empty is a directory without data files"):
    list_inputs(str(tmp_path / "empty"))
  with pytest.raises(DataError, match=r"part-\* matches no data file"):
    list_inputs(str(tmp_path / "part-*"))
  with pytest.raises(DataError, match=r"nope\.csv does not exist"):
    list(read_blocks(str(tmp_path / "nope.csv"), sep=",", bad_rows=BadRows()))
  (tmp_path / "empty.csv").write_text("")
  with pytest.raises(DataError, match=r"empty\.csv is empty"):
    list(read_delimited(str(tmp_path / "empty.csv"), sep=",", bad_rows=BadRows()))


def test_a_consumer_that_stops_early_stops_the_reading_thread(tmp_path):
  (tmp_path / "raw.csv").write_text("a,b\n" + "".join(f"{i},x\n" for i in range(50_000)))
  before = threading.active_count()
  blocks = read_blocks(str(tmp_path / "raw.csv"), sep=",", bad_rows=BadRows(), block_bytes=1000)
  next(blocks)
  assert threading.active_count() == before + 1
  blocks.close()
  assert threading.active_count() == before


def test_arguments_are_checked_with_what_was_received(tmp_path):
  (tmp_path / "raw.csv").write_text("a,b\n1,2\n")
  with pytest.raises(ValueError, match=r"sep must be a non-empty string, got ''"):
    list(read_blocks(str(tmp_path / "raw.csv"), sep="", bad_rows=BadRows()))
  with pytest.raises(ValueError, match=r"block_bytes must be a positive integer, got 0"):
    list(read_blocks(str(tmp_path / "raw.csv"), sep=",", bad_rows=BadRows(), block_bytes=0))
  with pytest.raises(ValueError, match=r"chunk_rows must be a positive integer, got 0"):
    list(read_delimited(str(tmp_path / "raw.csv"), sep=",", bad_rows=BadRows(), chunk_rows=0))
