"""Streaming readers of raw files, and the checks of raw files the loaders share.

Raw rows arrive as delimited text (plain or gzip'd), as Parquet, one file or a
directory or glob of part files. `read_blocks` reads any of them as a stream
of `Block`s: a `pyarrow.Table` of string columns (an empty field is "", never
null) with each row's line number in its file. `read_delimited` regroups the
same stream into the pandas `Chunk`s the loaders take.

Design decision: pyarrow's multi-threaded C++ CSV parser reads the text, and
the line-by-line Python parser (`_parse_line`) stays the definition of what a
line means. A file is read in blocks of about `block_bytes` cut after a line
feed. A block is accepted from pyarrow only when it is clean: no carriage
return other than in a CRLF, pyarrow parses exactly one row per line (so no
blank line, no wrong field count and no quoted field running into the next
line), and each line holding a double quote gives the fields the Python
parser gives it (pyarrow and Python's csv module differ on odd quoting, such
as a quote left open at the end of a line; so a file quoting most of its
lines is read at about the Python parser's speed). A block that is not
clean is cut in halves until the pieces are clean or small; small unclean
pieces are read by the Python parser. So anomalies keep their exact reports (kind, file,
line) and cost Python time only near where they are, and the rows, line
numbers and reports never depend on `block_bytes`. Text must decode (UTF-8 by
default) before it is parsed; a block that does not is refused by
`decode_error`, naming the file's first undecodable line.

Reading runs on a thread one or two blocks ahead of the consumer, across file
boundaries (pyarrow, file reads and zlib release the GIL); bad rows are
reported to `BadRows` on the consumer's thread, just before the block (or
chunk) holding their line is handed over. The speed is measured by the data
prep benchmark (benchmarks/data_prep.py), not stated here.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import csv
import dataclasses
import glob
import gzip
import importlib
import io
import itertools
import os
import queue
import threading
import zlib
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from data_prep.writer import BadRows, Chunk, DataError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
#: Raw text files are UTF-8, with or without a byte-order mark.
ENCODING = "utf-8-sig"
#: Bytes of text per block: large enough that pyarrow parses a block on every core.
BLOCK_BYTES = 16 << 20
#: An unclean piece of a block with at most this many lines goes to the Python parser.
_PYTHON_LINES = 2048
#: Blocks read ahead of the consumer.
_PREFETCH = 2
_BOM = codecs.BOM_UTF8


def check_file(path: str, *, compressed_ok: bool = False) -> None:
  """A one-line DataError unless `path` is a non-empty file.

  Args:
    path: The file.
    compressed_ok: Whether a gzip'd file is fine (the readers here decompress
      it); callers that open the file themselves keep the default, which
      refuses it.
  """
  if os.path.isdir(path):
    raise DataError(f"input {path} is a directory; name the file itself")
  if not os.path.isfile(path):
    raise DataError(f"input file {path} does not exist")
  if os.path.getsize(path) == 0:
    raise DataError(f"input file {path} is empty")
  if not compressed_ok:
    with open(path, "rb") as f:
      if f.read(2) == GZIP_MAGIC:
        raise DataError(f"input file {path} is gzip-compressed; decompress it first (gunzip)")


def decode_error(path: str, encoding: str) -> DataError:
  """The error for a file that is not `encoding` text, naming its first such line
  (of the decompressed text, for a gzip'd file)."""
  with _open_bytes(path) as f:
    try:
      for number, line in enumerate(f, start=1):
        try:
          line.decode(encoding)
        except UnicodeDecodeError as e:
          return DataError(f"{path} line {number:,}: not {encoding.replace('-sig', '')} text "
                           f"(byte {line[e.start:e.start + 1]!r} at column {e.start + 1})")
    except (EOFError, OSError, zlib.error):
      pass  # damaged gzip data after the lines that decode
  return DataError(f"{path}: not {encoding.replace('-sig', '')} text")


def check_unique_ids(table: pd.DataFrame, key: str, path: str) -> None:
  """A DataError naming the first id listed twice in a feature table's `key` column.

  Joined to the interactions, a repeated id would copy each of its rows.
  """
  repeated = table[key][table[key].duplicated()]
  if len(repeated):
    raise DataError(f"{path}: {key} '{repeated.iloc[0]}' has more than one row "
                    f"({repeated.nunique():,} {key}s repeat); each must be listed once")


def list_inputs(raw: Union[str, Sequence[str]]) -> List[str]:
  """The files `raw` names, in an order that does not depend on listing order.

  Args:
    raw: A file; a directory, meaning its files in name order (as Spark, Hive
      and BigQuery write part files; names starting with "." or "_", such as
      `_SUCCESS` and Hadoop's `.crc` checksums, and subdirectories are
      skipped); a glob pattern (its matching files in name order, skipped
      names skipped alike); or a list of files, kept in its order.

  Raises:
    DataError: a directory without files, or a pattern matching none.
  """
  if not isinstance(raw, (str, os.PathLike)):
    return [os.fspath(path) for path in raw]
  raw = os.fspath(raw)
  if os.path.isdir(raw):
    files = sorted(os.path.join(raw, name) for name in os.listdir(raw)
                   if _is_part(name) and os.path.isfile(os.path.join(raw, name)))
    if not files:
      raise DataError(f"input {raw} is a directory without data files")
    return files
  if glob.has_magic(raw):
    files = sorted(path for path in glob.glob(raw)
                   if _is_part(os.path.basename(path)) and os.path.isfile(path))
    if not files:
      raise DataError(f"input {raw} matches no data file")
    return files
  return [raw]


def _is_part(name: str) -> bool:
  """Whether a file named `name` in a directory of part files holds data."""
  return not name.startswith((".", "_")) and not name.endswith(".crc")


@dataclasses.dataclass(frozen=True)
class Block:
  """Consecutive rows of one raw file.

  Attributes:
    table: The rows, one string column per column of the file, named as in
      its header (or `columns`); an empty field is "", never null.
    lines: int64 [rows]: each row's line number in `source` (1 is the first
      line; the row number for Parquet).
    source: The file's path.
  """
  table: pa.Table
  lines: np.ndarray
  source: str


@dataclasses.dataclass
class _Piece:
  """A block as the reading thread makes it: rows, plus the bad rows among
  lines [`first`, `end`) not yet reported."""
  table: pa.Table
  lines: np.ndarray
  source: str
  first: int
  end: int
  bad: List[Tuple[str, int, str]]  # (kind, line, detail), in line order


def read_blocks(raw: Union[str, Sequence[str]], *, sep: str,
                columns: Optional[Sequence[str]] = None, required: Sequence[str] = (),
                bad_rows: BadRows, block_bytes: int = BLOCK_BYTES,
                encoding: str = ENCODING) -> Iterator[Block]:
  """Yields the rows of raw files as blocks of string columns.

  Each file is delimited text, plain or gzip'd, or Parquet (told apart by
  their first bytes, not their names). Text is read as `read_delimited` reads
  it; Parquet columns are converted to the text a delimited export would
  hold: integers and decimals in digits, booleans as "1" / "0", floats as
  the shortest text that reads back the same value (7.0 -> "7", 0.1 ->
  "0.1", 1e-07 -> "1e-7"), dates and times in ISO format, and a null or a
  float NaN as "". A Parquet file names its own columns (`columns` is for
  text without a header).

  Bad rows are reported to `bad_rows` before the block that would hold them
  is yielded. Blocks with no row are not yielded. Rows, line numbers and
  reports do not depend on `block_bytes`; block boundaries do.

  Args:
    raw: A file, directory, glob pattern or list of files (`list_inputs`).
    sep: Field separator of the text files ("\\t", ",").
    columns: Column names of text files without a header line; None: each
      text file's first line is its header.
    required: Columns each file must have (a one-line error otherwise).
    bad_rows: Where malformed lines are reported.
    block_bytes: Bytes of text (about) per block.
    encoding: The text's encoding (by default UTF-8, with or without a
      byte-order mark).

  Raises:
    DataError: a file missing, empty, not decodable text, damaged (gzip,
      Parquet), or lacking a required column, with a strict `bad_rows`, the
      first bad row.
  """
  paths = list_inputs(raw)
  listed = not isinstance(raw, str) or len(paths) != 1 or paths[0] != raw
  reading = _Reading(sep, columns, required, block_bytes, encoding)

  def pieces():
    for path in paths:
      yield from reading.pieces(path, listed)

  with contextlib.closing(_prefetched(pieces)) as blocks:
    for piece in blocks:
      for kind, line, detail in piece.bad:
        bad_rows.add(kind, piece.source, line, detail)
      if piece.table.num_rows:
        yield Block(piece.table, piece.lines, piece.source)


def read_delimited(path: str, *, sep: str, columns: Optional[Sequence[str]] = None,
                   required: Sequence[str] = (), bad_rows: BadRows,
                   chunk_rows: int = 200_000, encoding: str = ENCODING,
                   block_bytes: int = BLOCK_BYTES) -> Iterator[Chunk]:
  """Yields the rows of a delimited text file as string-typed chunks.

  A line whose number of fields differs from the number of columns is a bad
  row ("wrong column count"): reported to `bad_rows` with its line number and
  skipped. Blank lines are skipped silently. A field may be quoted as CSV
  writers quote it (`"Hello, world"`); a quoted field cannot span lines.
  Lines end at a line feed (LF or CRLF); a carriage return anywhere else in a
  line makes it a bad row ("line break inside a field"), as a value holding
  a line break cannot be a vocabulary entry. A gzip'd file is decompressed;
  a Parquet file is read as `read_blocks` reads it.

  Each chunk holds the rows of `chunk_rows` consecutive lines (the last one,
  those left), so chunks are the same whatever the block size; its frame
  has pandas' string columns (dtype `str`; "" for an empty field) and its
  index holds each row's line number. The bad rows among a chunk's lines
  are reported just before it is yielded.

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
    block_bytes: Bytes of text (about) read and parsed at a time.
  """
  if not isinstance(chunk_rows, int) or chunk_rows < 1:
    raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
  check_file(path, compressed_ok=True)
  reading = _Reading(sep, columns, required, block_bytes, encoding)
  chunks = _LineChunks(path, chunk_rows, bad_rows)
  with contextlib.closing(_prefetched(lambda: reading.pieces(path, False))) as pieces:
    for piece in pieces:
      yield from chunks.add(piece)
  yield from chunks.rest()


class _LineChunks:
  """A file's pieces, in order, cut into `Chunk`s of `chunk_rows` consecutive lines (counted
  from the first piece's first line), each yielded once its last line is read."""

  def __init__(self, path: str, chunk_rows: int, bad_rows: BadRows):
    self.path, self.chunk_rows, self.bad_rows = path, chunk_rows, bad_rows
    self.names: List[str] = []
    self.chunk_end: Optional[int] = None  # the line the open chunk ends before
    self.tables: List[pa.Table] = []
    self.lines: List[np.ndarray] = []
    self.bad: List[Tuple[str, int, str]] = []
    self.end: Optional[int] = None

  def add(self, piece: _Piece) -> Iterator[Chunk]:
    """The chunks `piece` completes; the rest of its rows stay in the open chunk."""
    if self.chunk_end is None:
      self.names = piece.table.column_names
      self.chunk_end = piece.first + self.chunk_rows
    self.bad.extend(piece.bad)
    self.end = piece.end
    at = 0
    while True:
      cut = int(np.searchsorted(piece.lines, self.chunk_end))
      if cut > at:
        self.tables.append(piece.table.slice(at, cut - at))
        self.lines.append(piece.lines[at:cut])
        at = cut
      if piece.end < self.chunk_end:
        break
      yield self._chunk()
      self.chunk_end += self.chunk_rows

  def rest(self) -> Iterator[Chunk]:
    """The last, partial chunk, if the file has lines after the last full one."""
    if self.end is not None and self.end > self.chunk_end - self.chunk_rows:
      yield self._chunk()

  def _chunk(self) -> Chunk:
    """The chunk of lines before `chunk_end`, its bad rows reported."""
    at = bisect.bisect_left(self.bad, self.chunk_end, key=lambda report: report[1])
    for kind, line, detail in self.bad[:at]:
      self.bad_rows.add(kind, self.path, line, detail)
    self.bad = self.bad[at:]
    frame = _frame(self.tables, self.lines, self.names)
    self.tables.clear()
    self.lines.clear()
    return Chunk(frame, source=self.path)


def _frame(tables: List[pa.Table], lines: List[np.ndarray], names: List[str]) -> pd.DataFrame:
  """Rows as a frame of pandas' string columns, indexed by line number."""
  if not tables:
    tables = [pa.table({f"f{i}": pa.array([], pa.string()) for i in range(len(names))})]
    lines = [np.zeros(0, dtype=np.int64)]
  table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
  frame = table.rename_columns([f"f{i}" for i in range(len(names))]).to_pandas()
  frame.columns = list(names)
  frame.index = pd.Index(np.concatenate(lines))
  return frame


class _Reading:
  """How to read files: the arguments of `read_blocks`, checked once."""

  def __init__(self, sep, columns, required, block_bytes, encoding):
    if not isinstance(sep, str) or not sep:
      raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    if not isinstance(block_bytes, int) or block_bytes < 1:
      raise ValueError(f"block_bytes must be a positive integer, got {block_bytes!r}")
    self.sep = sep
    self.columns = None if columns is None else list(columns)
    self.required = list(required)
    self.block_bytes = block_bytes
    self.encoding = encoding
    codec = codecs.lookup(encoding).name
    self.utf8 = codec in ("utf-8", "utf-8-sig")
    self.bom = codec == "utf-8-sig"
    # Blocks are cut at b"\n" and decoded one by one: fine for UTF-8 and for the
    # single-byte encodings that keep ASCII as it is (Latin-1, cp1252, ...).
    self.by_blocks = self.utf8 or (_single_byte(encoding)
                                   and bytes(range(128)).decode(encoding) == _ASCII)
    self.arrow = len(sep) == 1 and sep.isascii() and sep not in '"\r\n'

  def pieces(self, path: str, listed: bool) -> Iterator[_Piece]:
    """The pieces of one file; `listed`: one of a directory's or pattern's files,
    which may hold no line."""
    if listed and os.path.isfile(path) and os.path.getsize(path) == 0:
      return
    check_file(path, compressed_ok=True)
    with open(path, "rb") as f:
      magic = f.read(4)
    if magic == PARQUET_MAGIC:
      yield from _parquet_pieces(path, self.required, self.block_bytes)
    elif self.by_blocks:
      yield from self._text_pieces(path, listed)
    else:
      yield from self._python_pieces(path, listed)

  def _check_header(self, path: str, columns: List[str]) -> None:
    missing = [c for c in self.required if c not in columns]
    if missing:
      hint = (f" (the header is one field when split at {self.sep!r}: is the separator right?)"
              if len(columns) == 1 else "")
      raise DataError(f"{path}: missing column(s) {missing}; found {columns}{hint}")
    repeated = sorted({c for c in self.required if columns.count(c) > 1})
    if repeated:
      raise DataError(f"{path}: the header names column(s) {repeated} more than once")

  def _text_pieces(self, path: str, listed: bool) -> Iterator[_Piece]:
    blocks = _line_blocks(path, self.block_bytes)
    data = next(blocks, b"")
    if not data and not listed:
      raise DataError(f"input file {path} holds no text (once decompressed)")
    if self.bom and data.startswith(_BOM):
      data = data[len(_BOM):]
    first = 1
    columns = self.columns
    if columns is None:
      cut = data.find(b"\n") + 1 or len(data)
      columns = _split_line(self._decode(path, data[:cut]), self.sep)
      data, first = data[cut:], 2
    columns = list(columns)
    self._check_header(path, columns)
    for data in itertools.chain([data], blocks):
      if not data:
        continue
      if not self.utf8:
        data = self._decode(path, data).encode("utf-8")
      elif not data.isascii():
        self._decode(path, data)  # refuses what Python would not decode
      end = first + data.count(b"\n") + (not data.endswith(b"\n"))
      parts = self._parse(data, first, end, columns)
      tables, lines, bad = zip(*parts)
      yield _Piece(pa.concat_tables(tables) if len(tables) > 1 else tables[0],
                   np.concatenate(lines), path, first, end, [b for part in bad for b in part])
      first = end

  def _decode(self, path: str, data: bytes) -> str:
    try:
      return data.decode("utf-8" if self.utf8 else self.encoding)
    except UnicodeDecodeError:
      raise decode_error(path, self.encoding) from None

  def _parse(self, data: bytes, first: int, end: int, columns: List[str]) -> List[tuple]:
    """[(table, lines, bad rows)] of UTF-8 `data`, lines [`first`, `end`): pyarrow's
    parse where clean, the Python parser's elsewhere (see the module docstring)."""
    table = self._arrow(data, end - first, columns) if self.arrow else None
    if table is not None:
      return [(table, np.arange(first, end, dtype=np.int64), [])]
    if end - first <= _PYTHON_LINES or not self.arrow:
      return [_parse_python(data.decode("utf-8").split("\n"), first, self.sep, columns)]
    cut = data.rfind(b"\n", 0, len(data) // 2) + 1 or data.find(b"\n", len(data) // 2) + 1
    middle = first + data.count(b"\n", 0, cut)
    return (self._parse(data[:cut], first, middle, columns)
            + self._parse(data[cut:], middle, end, columns))

  def _arrow(self, data: bytes, lines: int, columns: List[str]) -> Optional[pa.Table]:
    """pyarrow's parse of `data`, or None if the block is not clean."""
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
      return None  # a bare carriage return
    quoted = b'"' in data
    names = [f"f{i}" for i in range(len(columns))]
    try:
      table = pacsv.read_csv(
          pa.py_buffer(data),
          read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
          parse_options=pacsv.ParseOptions(delimiter=self.sep, quote_char='"' if quoted else False,
                                           double_quote=True, escape_char=False,
                                           newlines_in_values=False, ignore_empty_lines=True),
          convert_options=pacsv.ConvertOptions(
              column_types={n: pa.string() for n in names}, null_values=[],
              strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=False))
    except pa.ArrowInvalid:
      return None  # a wrong field count, a quote left open at the end
    if table.num_rows != lines:
      return None  # a blank line, or a quoted field running into the next line
    if quoted and not self._same_as_python(data, table):
      return None
    return table.rename_columns(columns)

  def _same_as_python(self, data: bytes, table: pa.Table) -> bool:
    """Whether the Python parser reads each line holding a quote as pyarrow did."""
    view = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(view == ord("\n"))
    rows = np.unique(np.searchsorted(breaks, np.flatnonzero(view == ord('"'))))
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(data)]])
    parsed = table.take(pa.array(rows)).columns
    values = [column.to_pylist() for column in parsed]
    for i, row in enumerate(rows):
      line = data[starts[row]:ends[row]].decode("utf-8")
      if _split_line(line, self.sep) != [column[i] for column in values]:
        return False
    return True

  def _python_pieces(self, path: str, listed: bool) -> Iterator[_Piece]:
    """Text in an encoding that blocks cannot be cut in at b"\\n" (UTF-16, ...)."""
    try:
      with io.TextIOWrapper(_open_bytes(path), encoding=self.encoding, newline="\n") as text:
        first = 1
        columns = self.columns
        if columns is None:
          header = next(text, None)
          if header is None:
            if listed:
              return
            raise DataError(f"input file {path} holds no text (once decompressed)")
          columns, first = _split_line(header, self.sep), 2
        self._check_header(path, list(columns))
        while True:
          lines = list(itertools.islice(text, max(1, self.block_bytes // 64)))
          if not lines:
            return
          table, numbers, bad = _parse_python(lines, first, self.sep, list(columns))
          yield _Piece(table, numbers, path, first, first + len(lines), bad)
          first += len(lines)
    except UnicodeDecodeError:
      raise decode_error(path, self.encoding) from None


_ASCII = bytes(range(128)).decode("ascii")


def _single_byte(encoding: str) -> bool:
  """Whether `encoding` maps each byte to one character on its own (a charmap)."""
  info = codecs.lookup(encoding)
  if info.name in ("iso8859-1", "ascii"):
    return True
  module = importlib.import_module(info.incrementaldecoder.__module__)
  return hasattr(module, "decoding_table")


def _open_bytes(path: str):
  """`path` opened for reading bytes, decompressed if it is gzip'd."""
  with open(path, "rb") as f:
    gzipped = f.read(2) == GZIP_MAGIC
  return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _line_blocks(path: str, block_bytes: int) -> Iterator[bytes]:
  """The file's bytes (decompressed) in blocks of about `block_bytes`, each but the
  last ending with a line feed."""
  try:
    with _open_bytes(path) as f:
      rest = b""
      while True:
        data = f.read(block_bytes)
        if not data:
          break
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut:
          rest = data[cut:]
          yield data[:cut]
        else:
          rest = data
      if rest:
        yield rest
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise DataError(f"{path}: damaged gzip data ({e})") from None


def _parquet_pieces(path: str, required: Sequence[str], block_bytes: int) -> Iterator[_Piece]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    missing = [c for c in required if c not in columns]
    if missing:
      raise DataError(f"{path}: missing column(s) {missing}; found {columns}")
    repeated = sorted({c for c in required if columns.count(c) > 1})
    if repeated:
      raise DataError(f"{path}: the Parquet file has column(s) {repeated} more than once")
    first = 1
    for batch in parquet.iter_batches(batch_size=max(1, block_bytes // 64)):
      table = pa.Table.from_arrays(
          [_as_strings(batch.column(i), name, path) for i, name in enumerate(columns)],
          names=columns)
      end = first + table.num_rows
      yield _Piece(table, np.arange(first, end, dtype=np.int64), path, first, end, [])
      first = end
  except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"{path}: not a readable Parquet file ({message})") from None


def _as_strings(column: pa.Array, name: str, path: str) -> pa.Array:
  """A Parquet column as the strings a delimited export would hold (`read_blocks`)."""
  kind = column.type
  if pa.types.is_dictionary(kind):
    return _as_strings(column.dictionary_decode(), name, path)
  if pa.types.is_nested(kind):
    raise DataError(f"{path}: column '{name}' is {kind}, not one value per row; store it as "
                    "text (a list as one field of values joined by its separator)")
  try:
    if pa.types.is_boolean(kind):
      text = pc.if_else(column, "1", "0")
    elif pa.types.is_floating(kind):
      text = pc.if_else(pc.is_nan(column), "", pc.cast(column, pa.string()))
    else:  # integers, decimals, dates, times, text, bytes that are UTF-8 text
      text = pc.cast(column, pa.string())
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    raise DataError(f"{path}: column '{name}' ({kind}) cannot be read as text") from None
  return pc.fill_null(text, "")


def _prefetched(make: Callable[[], Iterator[_Piece]]) -> Iterator[_Piece]:
  """The items of `make()`, made on a thread up to `_PREFETCH` items ahead; its
  exceptions are raised here, in order."""
  items: queue.Queue = queue.Queue(maxsize=_PREFETCH)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def run() -> None:
    try:
      for piece in make():
        if not put((True, piece)):
          return
      put((False, None))
    except BaseException as e:  # pylint: disable=broad-except  (raised on the consumer's side)
      put((False, e))

  thread = threading.Thread(target=run, name="data_prep.readers", daemon=True)
  thread.start()
  try:
    while True:
      ok, item = items.get()
      if ok:
        yield item
      elif item is None:
        return
      else:
        raise item
  finally:
    stop.set()
    thread.join()


def _parse_python(lines: Sequence[str], first: int, sep: str, columns: List[str]) -> tuple:
  """(table, line numbers, bad rows) of `lines` (with or without their line feeds),
  the first being line `first`, as the Python line parser reads them."""
  width = len(columns)
  if lines and lines[-1] == "" and len(lines) > 1:
    lines = lines[:-1]  # after the final line feed of a block
  rows, numbers, bad = [], [], []
  for offset, line in enumerate(lines):
    fields, problem = _parse_line(line, sep, width)
    if problem:
      bad.append((problem[0], first + offset, problem[1]))
    elif fields is not None:
      rows.append(fields)
      numbers.append(first + offset)
  names = [f"f{i}" for i in range(width)]
  table = pa.Table.from_arrays(
      [pa.array([row[i] for row in rows], type=pa.string()) for i in range(width)], names=names)
  return table.rename_columns(columns), np.array(numbers, dtype=np.int64), bad


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
