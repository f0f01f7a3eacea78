"""Streaming readers of raw delimited files, and the bad-row report they share with the writer."""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Optional, Sequence

import pandas as pd

from data_prep.writer import BadRows, Chunk, DataError

def _check_file(path: str) -> None:
  if not os.path.isfile(path):
    raise DataError(f"input file {path} does not exist")
  if os.path.getsize(path) == 0:
    raise DataError(f"input file {path} is empty")


def read_delimited(path: str, *, sep: str, columns: Optional[Sequence[str]] = None,
                   required: Sequence[str] = (), bad_rows: BadRows,
                   chunk_rows: int = 200_000, encoding: str = "utf-8") -> Iterator[Chunk]:
  """Yields the rows of a delimited text file as string-typed chunks.

  A line whose number of fields differs from the number of columns is a bad
  row ("wrong column count"): reported to `bad_rows` with its line number and
  skipped. Blank lines are skipped silently.

  Args:
    path: The file.
    sep: Field separator ("\\t", ",").
    columns: Column names for a file without a header line; None: the first
      line is the header.
    required: Columns that must exist (a one-line error otherwise).
    bad_rows: Where malformed lines are reported.
    chunk_rows: Lines per chunk.
    encoding: The file's text encoding.
  """
  _check_file(path)
  with open(path, encoding=encoding, newline="") as f:
    first_line = 1
    if columns is None:
      columns = f.readline().rstrip("\r\n").split(sep)
      first_line = 2
    columns = list(columns)
    missing = [c for c in required if c not in columns]
    if missing:
      raise DataError(f"{path}: missing column(s) {missing}; found {columns}")
    width = len(columns)
    while True:
      lines = list(itertools.islice(f, chunk_rows))
      if not lines:
        break
      rows = []
      for offset, line in enumerate(lines):
        fields = line.rstrip("\r\n").split(sep)
        if len(fields) == width:
          rows.append(fields)
        elif line.strip():
          bad_rows.add("wrong column count", path, first_line + offset,
                        f"{len(fields)} fields, expected {width}")
          rows.append(None)
        else:
          rows.append(None)
      frame = pd.DataFrame([r for r in rows if r is not None], columns=columns, dtype=object)
      frame.index = [first_line + i for i, r in enumerate(rows) if r is not None]
      yield Chunk(frame, source=path)
      first_line += len(lines)
