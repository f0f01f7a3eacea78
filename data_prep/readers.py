"""Streaming readers of raw delimited files, and the checks of raw files the loaders share."""

from __future__ import annotations

import csv
import itertools
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import pandas as pd

from data_prep.writer import BadRows, Chunk, DataError

GZIP_MAGIC = b"\x1f\x8b"
#: Raw text files are UTF-8, with or without a byte-order mark.
ENCODING = "utf-8-sig"


def check_file(path: str) -> None:
  """A one-line DataError unless `path` is a non-empty, uncompressed file."""
  if os.path.isdir(path):
    raise DataError(f"input {path} is a directory; name the file itself")
  if not os.path.isfile(path):
    raise DataError(f"input file {path} does not exist")
  if os.path.getsize(path) == 0:
    raise DataError(f"input file {path} is empty")
  with open(path, "rb") as f:
    if f.read(2) == GZIP_MAGIC:
      raise DataError(f"input file {path} is gzip-compressed; decompress it first (gunzip)")


def decode_error(path: str, encoding: str) -> DataError:
  """The error for a file that is not `encoding` text, naming its first such line."""
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      try:
        line.decode(encoding)
      except UnicodeDecodeError as e:
        return DataError(f"{path} line {number:,}: not {encoding.replace('-sig', '')} text "
                         f"(byte {line[e.start:e.start + 1]!r} at column {e.start + 1})")
  return DataError(f"{path}: not {encoding.replace('-sig', '')} text")


def check_unique_ids(table: pd.DataFrame, key: str, path: str) -> None:
  """A DataError naming the first id listed twice in a feature table's `key` column.

  Joined to the interactions, a repeated id would copy each of its rows.
  """
  repeated = table[key][table[key].duplicated()]
  if len(repeated):
    raise DataError(f"{path}: {key} '{repeated.iloc[0]}' has more than one row "
                    f"({repeated.nunique():,} {key}s repeat); each must be listed once")


def read_delimited(path: str, *, sep: str, columns: Optional[Sequence[str]] = None,
                   required: Sequence[str] = (), bad_rows: BadRows,
                   chunk_rows: int = 200_000, encoding: str = ENCODING) -> Iterator[Chunk]:
  """Yields the rows of a delimited text file as string-typed chunks.

  A line whose number of fields differs from the number of columns is a bad
  row ("wrong column count"): reported to `bad_rows` with its line number and
  skipped. Blank lines are skipped silently. A field may be quoted as CSV
  writers quote it (`"Hello, world"`); a quoted field cannot span lines.
  Lines end at a line feed (LF or CRLF); a carriage return anywhere else in a
  line makes it a bad row ("line break inside a field"), as a value holding
  a line break cannot be a vocabulary entry.

  Args:
    path: The file.
    sep: Field separator ("\\t", ",").
    columns: Column names for a file without a header line; None: the first
      line is the header.
    required: Columns that must exist (a one-line error otherwise).
    bad_rows: Where malformed lines are reported.
    chunk_rows: Lines per chunk.
    encoding: The file's text encoding (by default UTF-8, with or without a
      byte-order mark).
  """
  check_file(path)
  try:
    yield from _read_lines(path, sep, columns, required, bad_rows, chunk_rows, encoding)
  except UnicodeDecodeError:
    raise decode_error(path, encoding) from None


def _parse_line(line: str, sep: str, width: int
                ) -> Tuple[Optional[List[str]], Optional[Tuple[str, str]]]:
  """A line's `width` fields, or None and why: (kind, detail) of a bad row, or None if blank."""
  text = line.rstrip("\r\n")
  if "\r" in text:
    return None, ("line break inside a field", "a carriage return inside the line")
  fields = _split_line(text, sep)
  if len(fields) == width:
    return fields, None
  if text.strip():
    return None, ("wrong column count", f"{len(fields)} fields, expected {width}")
  return None, None


def _split_line(line: str, sep: str) -> List[str]:
  """A line's fields. One holding a double quote is read as CSV quoting is written
  (`"a, b"` is one field, `""` a quote), for one-character separators."""
  line = line.rstrip("\r\n")
  if '"' in line and len(sep) == 1:
    return next(csv.reader([line], delimiter=sep), [])
  return line.split(sep)


def _read_lines(path, sep, columns, required, bad_rows, chunk_rows, encoding):
  with open(path, encoding=encoding, newline="\n") as f:  # a bare CR does not end a line
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
      yield Chunk(frame, source=path)
      first_line += len(lines)
