"""Tenrec QK-Video -> prepared data set.

Run as `python -m data_prep.qkvideo --raw QK-video.csv --out DIR`
(or `python main.py prepare --dataset=qkvideo ...`).

Raw layout: `QK-video.csv`, comma-separated with a header: user_id, item_id,
click, follow, like, share, video_category, watching_times, gender, age.

Features: user_id, item_id, video_category, gender, age (categorical).
`watching_times` is left out: it is measured after the impression, like the
labels. Tasks: click and like by default; any of click, follow, like, share
with `--tasks`. Values seen fewer than `--min_count` (10) times in the train
split share the OOV row; a random 80/10/10 train/valid/test split with exact
sizes, seed 42. `--raw` may also be gzip'd, Parquet, or a directory or glob of
part files (`data_prep.readers.read_blocks`).
"""

from __future__ import annotations

from typing import Optional, Sequence

from data_prep.readers import BLOCK_BYTES
from data_prep.writer import (ROWS_PER_RECORD, BadRows, ExactSplit, Layout, check_tasks,
                              prepare_layout)

FEATURES = ["user_id", "item_id", "video_category", "gender", "age"]
LABEL_COLUMNS = ("click", "follow", "like", "share")
TASKS = ("click", "like")
DEFAULT_MIN_COUNT = 10
DEFAULT_SEED = 42


def prepare_qkvideo(raw: str, out_dir: str, *, min_count: int = DEFAULT_MIN_COUNT,
                    seed: int = DEFAULT_SEED, tasks: Optional[Sequence[str]] = None,
                    bad_rows: Optional[BadRows] = None, overwrite: bool = False,
                    block_bytes: int = BLOCK_BYTES, rows_per_record: int = ROWS_PER_RECORD,
                    processes: Optional[int] = None) -> dict:
  """Prepares `raw` (QK-video.csv) in `out_dir`; returns the stats."""
  made = layout(raw, min_count=min_count, seed=seed, tasks=tasks,
                rows_per_record=rows_per_record, block_bytes=block_bytes)
  return prepare_layout(made, out_dir, bad_rows=bad_rows, overwrite=overwrite,
                        processes=processes)


def layout(raw: str, *, min_count: Optional[int] = None, seed: Optional[int] = None,
           tasks: Optional[Sequence[str]] = None, rows_per_record: int = ROWS_PER_RECORD,
           block_bytes: Optional[int] = None) -> Layout:
  """QK-Video's layout of `raw` (the local path and data_prep.beam read it); None: the
  defaults."""
  tasks = check_tasks("QK-Video", tasks or TASKS, LABEL_COLUMNS)
  return Layout(raw, ",", None, list(FEATURES) + tasks, list(FEATURES), tasks, "user_id",
                ExactSplit(test=0.1, valid_of_rest=1 / 9), inputs=[raw],
                min_count=DEFAULT_MIN_COUNT if min_count is None else min_count,
                seed=DEFAULT_SEED if seed is None else seed, rows_per_record=rows_per_record,
                block_bytes=block_bytes)


if __name__ == "__main__":
  from data_prep import cli
  cli.run_module("qkvideo")
