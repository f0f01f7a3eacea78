"""The command line shared by `python -m data_prep.<name>` and `python main.py prepare`."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from typing import Callable, List, Optional, Tuple

from absl import app, flags
import tensorflow as tf

from data_prep import beam_flags  # --runner, --beam_options: prepare on Apache Beam
from data_prep.writer import ROWS_PER_RECORD, BadRows
from stem_tfrs.errors import first_line


#: The flags of `--dataset=logs` (your own logs), passed to `prepare_logs` as they are named.
LOGS_FLAGS = ("features", "numeric", "log1p", "group_column", "sep", "multivalent",
              "split_column", "valid_from", "test_from", "test_fraction", "valid_fraction")


@dataclasses.dataclass(frozen=True)
class Loader:
  """A raw data set's preparer, its defaults, and the flags of its own it takes."""
  prepare: Callable[..., dict]
  min_count: int
  seed: int
  tasks: Tuple[str, ...]
  own_flags: Tuple[str, ...] = ()


def loaders() -> dict:
  """Name -> Loader, for every raw layout data_prep reads."""
  from data_prep import kuairand, logs, movielens, qkvideo, tiktok
  return {
      "logs": Loader(_prepare_logs, logs.DEFAULT_MIN_COUNT, logs.DEFAULT_SEED, (),
                     own_flags=LOGS_FLAGS),
      "tiktok": Loader(tiktok.prepare_tiktok, tiktok.DEFAULT_MIN_COUNT, tiktok.DEFAULT_SEED,
                       tiktok.TASKS),
      "qkvideo": Loader(qkvideo.prepare_qkvideo, qkvideo.DEFAULT_MIN_COUNT,
                        qkvideo.DEFAULT_SEED, qkvideo.TASKS),
      "kuairand": Loader(kuairand.prepare_kuairand, kuairand.DEFAULT_MIN_COUNT,
                         kuairand.DEFAULT_SEED, kuairand.TASKS),
      "movielens": Loader(movielens.prepare_movielens, movielens.DEFAULT_MIN_COUNT,
                          movielens.DEFAULT_SEED, movielens.TASKS),
  }


def define_flags(seed_flag: bool = True) -> None:
  """--raw, --out, --min_count, --tasks, --strict, --overwrite, --rows_per_record (and --seed)."""
  flags.DEFINE_string("raw", None, "Raw input file (a directory for movielens), in the data "
                      "set's original layout.")
  flags.DEFINE_string("out", None, "Output directory of the prepared data set.")
  flags.DEFINE_integer("min_count", None, "Values seen fewer times share the OOV row "
                       "(default: the data set's, 10 for TikTok as in the paper).")
  flags.DEFINE_list("tasks", None, "Label columns to keep as tasks (default: the data set's).")
  flags.DEFINE_bool("strict", False, "Stop at the first bad row instead of skipping it.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out directory.")
  flags.DEFINE_integer("rows_per_record", ROWS_PER_RECORD,
                       "Rows a TFRecord record holds (consecutive rows of a shard, column by "
                       "column); 1 writes one tf.train.Example per row, for other tools.",
                       lower_bound=1)
  flags.DEFINE_integer("processes", os.cpu_count() or 1, "Worker threads validating, counting "
                       "and encoding blocks of rows (default: the machine's cores); the data set "
                       "is the same for any number.", lower_bound=1)
  if seed_flag:
    flags.DEFINE_integer("seed", None, "Seed of the split (default: the data set's, 42).")
  # --dataset=logs: your own logs (data_prep/logs.py).
  flags.DEFINE_list("features", None, "logs: the categorical columns to embed, in order.")
  flags.DEFINE_list("numeric", [], "logs: numeric columns (durations, counts), fed "
                    "standardized beside the embeddings; an empty field is missing.")
  flags.DEFINE_list("log1p", [], "logs: numeric columns to take the signed log of first "
                    "(heavy-tailed counts).")
  flags.DEFINE_string("group_column", None, "logs: the feature that groups rows for gAUC "
                      "(the user id).")
  flags.DEFINE_string("sep", ",", "logs: the field separator (tab, comma, space, semicolon "
                      "or '\\t' name those).")
  flags.DEFINE_list("multivalent", [], "logs: feature:separator items for features holding a "
                    "list of values in one field (tags:|, tags:comma).")
  flags.DEFINE_string("split_column", None, "logs: split by time on this column, with "
                      "--valid_from and --test_from (default: a random split).")
  flags.DEFINE_string("valid_from", None, "logs: rows with split_column at or after this value "
                      "(and before --test_from) are validation rows.")
  flags.DEFINE_string("test_from", None, "logs: rows with split_column at or after this value "
                      "are test rows.")
  flags.DEFINE_float("test_fraction", 0.1, "logs: the random split's test fraction.")
  flags.DEFINE_float("valid_fraction", 0.1, "logs: the random split's validation fraction "
                     "of the rows left after test.")


def _prepare_logs(raw: str, out_dir: str, *, multivalent, sep, processes=None,
                  **kwargs) -> dict:
  """`logs.prepare_logs` with its separators as the flags spell them (tags:comma, tab)."""
  from data_prep import logs
  return logs.prepare_logs(raw, out_dir, multivalent=logs.parse_multivalent(multivalent),
                           sep=logs.separator(sep), processes=processes, **kwargs)


def prepare_from_flags(name: str, seed: Optional[int]) -> int:
  """Runs loader `name` with the parsed flags; prints the outcome; returns the exit status.

  The command line's step; `data_prep.writer.prepare` is the library's, which
  every loader calls with its layout."""
  FLAGS = flags.FLAGS
  loader = beam_flags.loader(name, loaders()[name])  # the local path without --runner
  if not FLAGS.raw or not FLAGS.out:
    print("error: --raw and --out are required", file=sys.stderr)
    return 2
  misplaced = [f"--{n}" for n in LOGS_FLAGS if FLAGS[n].present and n not in loader.own_flags]
  if misplaced:
    print(f"error: {', '.join(misplaced)} {'applies' if len(misplaced) == 1 else 'apply'} "
          f"only to --dataset=logs (your own logs); {name} has its own columns and split",
          file=sys.stderr)
    return 2
  bad_rows = BadRows(strict=FLAGS.strict)
  try:
    stats = loader.prepare(
        FLAGS.raw, FLAGS.out, bad_rows=bad_rows, overwrite=FLAGS.overwrite,
        min_count=loader.min_count if FLAGS.min_count is None else FLAGS.min_count,
        seed=loader.seed if seed is None else seed, tasks=FLAGS.tasks or loader.tasks,
        rows_per_record=FLAGS.rows_per_record,
        **{n: FLAGS[n].value for n in loader.own_flags},
        **({"processes": FLAGS.processes}
           if "processes" in inspect.signature(loader.prepare).parameters else {}))
  except (ValueError, OSError, tf.errors.OpError) as e:
    if bad_rows.total:  # what was skipped before the error, then the error: the last line
      print(bad_rows.summary(), file=sys.stderr)
    message = first_line(e.message) if isinstance(e, tf.errors.OpError) else e
    print(f"error: {message}", file=sys.stderr)
    return 1
  print(f"wrote {FLAGS.out}: " + ", ".join(
      f"{split} {s['rows']:,} rows" for split, s in stats.items()))
  print(bad_rows.summary())
  return 0


def run_module(name: str) -> None:
  """`python -m data_prep.<name>`: define the flags and run."""
  define_flags()

  def main(argv: List[str]) -> int:
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
      return 2
    return prepare_from_flags(name, flags.FLAGS.seed)

  app.run(main)
