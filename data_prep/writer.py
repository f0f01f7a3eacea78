"""Raw rows -> prepared data set: split, vocabularies, TFRecord shards, schema.json, stats.json.

Every data_prep module reduces its raw layout to a stream of pandas chunks
(`Chunk`: the rows plus where they came from) and hands it to `prepare`, which
makes two passes over the stream and never holds more than one chunk:

1. validate each chunk (columns, 0/1 labels), assign each row to a split with a
   seeded random draw, count every feature value seen in the train split, and
   count rows and positives per split;
2. write the vocabularies (values seen at least `min_count` times in train,
   most frequent first; the rest share the OOV row), then write each row as a
   `tf.train.Example` of raw values to the shards of its split.

The data set is written to a hidden temporary sibling of `out_dir` and renamed
into place only when complete, so a failed run leaves nothing that training
could mistake for a prepared data set.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from stem_tfrs.schema import SPLITS, STATS_FILE, CategoricalFeature, Schema


class DataError(ValueError):
  """The raw data is unusable; the message says what and where."""


@dataclasses.dataclass
class Chunk:
  """A block of raw rows.

  Attributes:
    frame: The rows, one column per raw column (at least the features and labels).
    source: Where they came from (a file path, or a generator's name).
    first_line: Line number in `source` of the frame's first row (1-based).
  """
  frame: pd.DataFrame
  source: str
  first_line: int = 1


@dataclasses.dataclass(frozen=True)
class SplitFractions:
  """Random split as in the paper: `test` of all rows, then `valid` of the rest."""
  test: float = 0.1
  valid_of_rest: float = 0.1

  def assign(self, draws: np.ndarray) -> np.ndarray:
    """Uniform draws in [0, 1) -> split index (0 train, 1 valid, 2 test)."""
    valid_end = self.test + (1.0 - self.test) * self.valid_of_rest
    return np.where(draws < self.test, 2, np.where(draws < valid_end, 1, 0))


def prepare(read_chunks: Callable[[], Iterable[Chunk]], *, features: Sequence[str],
            labels: Sequence[str], group_column: Optional[str], out_dir: str,
            min_count: int = 1, seed: int = 42,
            split: SplitFractions = SplitFractions(),
            num_shards: Optional[Dict[str, int]] = None,
            overwrite: bool = False) -> dict:
  """Writes a prepared data set to `out_dir` and returns its stats.

  Args:
    read_chunks: Called once per pass; yields the raw rows as `Chunk`s, the
      same rows in the same chunks each time.
    features: Categorical columns to keep, in model input order.
    labels: 0/1 label columns, one per task.
    group_column: The feature that groups rows for gAUC (the user id).
    out_dir: Destination directory; must not exist unless `overwrite`.
    min_count: Values seen fewer times in train map to the OOV row.
    seed: Seed of the split draw.
    split: Split fractions.
    num_shards: Shards per split (default train 8, valid 2, test 2).
    overwrite: Replace an existing `out_dir`.

  Returns:
    The stats written to stats.json.

  Raises:
    DataError: a missing column, a label outside {0, 1}, or no rows at all.
    FileExistsError: `out_dir` exists and `overwrite` is False.
  """
  features, labels = list(features), list(labels)
  num_shards = {"train": 8, "valid": 2, "test": 2, **(num_shards or {})}
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)

  counts = {name: collections.Counter() for name in features}
  rows = np.zeros(len(SPLITS), dtype=np.int64)
  positives = np.zeros((len(SPLITS), len(labels)), dtype=np.int64)
  for chunk, splits in _split_chunks(read_chunks, features, labels, split, seed):
    train = chunk.frame[splits == 0]
    for name in features:
      counts[name].update(train[name].value_counts(sort=False).to_dict())
    for s in range(len(SPLITS)):
      in_split = splits == s
      rows[s] += in_split.sum()
      positives[s] += chunk.frame.loc[in_split, labels].to_numpy().sum(axis=0)
  if rows.sum() == 0:
    raise DataError("the raw input holds no rows")

  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the data set is not
    schema_features = _write_vocabularies(tmp, counts, min_count)
    shard_files = _write_shards(tmp, read_chunks, features, labels, split, seed, num_shards)
    schema = Schema(features=schema_features, labels=labels,
                    group_column=group_column, splits=shard_files, directory=tmp)
    schema.save(tmp)
    stats = {
        name: {"rows": int(rows[s]),
               "positive_rate": {task: float(positives[s, t] / max(rows[s], 1))
                                 for t, task in enumerate(labels)}}
        for s, name in enumerate(SPLITS)}
    with open(os.path.join(tmp, STATS_FILE), "w") as f:
      json.dump(stats, f, indent=2)
      f.write("\n")
    _replace_dir(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return stats


def _split_chunks(read_chunks, features, labels, split, seed) -> Iterator:
  """Yields (validated chunk, split index per row); the same draws every pass."""
  for i, chunk in enumerate(read_chunks()):
    _validate(chunk, features, labels)
    draws = np.random.default_rng([seed, i]).random(len(chunk.frame))
    yield chunk, split.assign(draws)


def _validate(chunk: Chunk, features: List[str], labels: List[str]) -> None:
  frame = chunk.frame
  missing = [c for c in features + labels if c not in frame.columns]
  if missing:
    raise DataError(
        f"{chunk.source}: missing column(s) {missing}; found {list(frame.columns)}")
  for label in labels:
    values = pd.to_numeric(frame[label], errors="coerce")
    bad = ~values.isin([0, 1]).to_numpy()
    if bad.any():
      row = int(np.argmax(bad))
      raise DataError(
          f"column '{label}' in {chunk.source} line {chunk.first_line + row:,}: "
          f"'{frame[label].iloc[row]}' is not 0 or 1")
    frame[label] = values.astype(np.int64)
  for name in features:
    frame[name] = frame[name].fillna("").astype(str)
    if frame[name].str.contains("\n", regex=False).any():
      raise DataError(f"column '{name}' in {chunk.source}: a value holds a newline")


def _write_vocabularies(out_dir: str, counts: Dict[str, collections.Counter],
                        min_count: int) -> List[CategoricalFeature]:
  os.makedirs(os.path.join(out_dir, "vocab"))
  schema_features = []
  for name, counter in counts.items():
    kept = sorted((v for v, c in counter.items() if c >= min_count),
                  key=lambda v: (-counter[v], v))
    path = os.path.join("vocab", f"{name}.txt")
    with open(os.path.join(out_dir, path), "w", encoding="utf-8") as f:
      f.writelines(f"{v}\n" for v in kept)
    schema_features.append(CategoricalFeature(
        name=name, dtype="string", vocabulary_file=path, vocabulary_size=len(kept)))
  return schema_features


def _write_shards(out_dir, read_chunks, features, labels, split, seed,
                  num_shards) -> Dict[str, List[str]]:
  names = {s: [f"{s}-{i:05d}-of-{num_shards[s]:05d}.tfrecord"
               for i in range(num_shards[s])] for s in SPLITS}
  writers = {s: [tf.io.TFRecordWriter(os.path.join(out_dir, n)) for n in names[s]]
             for s in SPLITS}
  written = collections.Counter()
  try:
    for chunk, splits in _split_chunks(read_chunks, features, labels, split, seed):
      columns = [(n, chunk.frame[n].str.encode("utf-8").tolist()) for n in features]
      label_columns = [(n, chunk.frame[n].tolist()) for n in labels]
      for row, s in enumerate(splits):
        split_name = SPLITS[s]
        example = tf.train.Example()
        feature = example.features.feature
        for name, values in columns:
          feature[name].bytes_list.value.append(values[row])
        for name, values in label_columns:
          feature[name].int64_list.value.append(values[row])
        shard = written[split_name] % num_shards[split_name]
        writers[split_name][shard].write(example.SerializeToString())
        written[split_name] += 1
  finally:
    for split_writers in writers.values():
      for writer in split_writers:
        writer.close()
  return names


def _replace_dir(src: str, dst: str) -> None:
  """Renames `src` to `dst`, replacing an existing `dst` as late as possible."""
  old = None
  if os.path.exists(dst):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-",
                           dir=os.path.dirname(dst))
    os.rename(dst, os.path.join(old, "data"))
  os.rename(src, dst)
  if old:
    shutil.rmtree(old, ignore_errors=True)
