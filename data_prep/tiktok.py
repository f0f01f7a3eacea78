"""TikTok (ICME 2019 Short Video Understanding Challenge, Track 1) -> prepared data set.

Run as `python -m data_prep.tiktok --raw final_track1_train.txt --out DIR`
(or `python main.py prepare --dataset=tiktok ...`).

Raw layout: `final_track1_train.txt`, tab-separated, no header, 12 columns:
uid, user_city, item_id, author_id, item_city, channel, finish, like,
music_id, device_id, create_time, video_duration.

The defaults reproduce the STEM-Net authors' preprocessing: the 8 categorical
features uid, item_id, author_id, item_city, channel, music_id, device_id,
video_duration; tasks finish and like (its only 0/1 columns); values seen
fewer than 10 times in the train split share one OOV row (the authors' public
code fits its feature vocabulary on the train split too); a random split of
10% test, then 10% of the rest for validation, seed 42, with exactly the
sizes scikit-learn's `train_test_split` gives (81/9/10).
`--raw` may also be gzip'd, Parquet, or a directory or glob of part files
(`data_prep.readers.read_blocks`).
Malformed lines are skipped and reported (`--strict` stops at the first).
"""

from __future__ import annotations

from typing import Optional, Sequence

from data_prep.readers import BLOCK_BYTES
from data_prep.writer import (ROWS_PER_RECORD, BadRows, ExactSplit, Layout, check_tasks,
                              prepare_layout)

COLUMNS = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
           "music_id", "device_id", "create_time", "video_duration"]
FEATURES = ["uid", "item_id", "author_id", "item_city", "channel", "music_id", "device_id",
            "video_duration"]
TASKS = ("finish", "like")  # the 0/1 columns
DEFAULT_MIN_COUNT = 10
DEFAULT_SEED = 42


def prepare_tiktok(raw: str, out_dir: str, *, min_count: int = DEFAULT_MIN_COUNT,
                   seed: int = DEFAULT_SEED, tasks: Optional[Sequence[str]] = None,
                   bad_rows: Optional[BadRows] = None, overwrite: bool = False,
                   block_bytes: int = BLOCK_BYTES, rows_per_record: int = ROWS_PER_RECORD,
                   processes: Optional[int] = None) -> dict:
  """Prepares `raw` (final_track1_train.txt) in `out_dir`; returns the stats."""
  made = layout(raw, min_count=min_count, seed=seed, tasks=tasks,
                rows_per_record=rows_per_record, block_bytes=block_bytes)
  return prepare_layout(made, out_dir, bad_rows=bad_rows, overwrite=overwrite,
                        processes=processes)


def layout(raw: str, *, min_count: Optional[int] = None, seed: Optional[int] = None,
           tasks: Optional[Sequence[str]] = None, rows_per_record: int = ROWS_PER_RECORD,
           block_bytes: Optional[int] = None) -> Layout:
  """TikTok's layout of `raw` (the local path and data_prep.beam read it); None: the
  defaults."""
  return Layout(raw, "\t", list(COLUMNS), [], list(FEATURES),
                check_tasks("TikTok", tasks or TASKS, TASKS), "uid",
                ExactSplit(test=0.1, valid_of_rest=0.1), inputs=[raw],
                min_count=DEFAULT_MIN_COUNT if min_count is None else min_count,
                seed=DEFAULT_SEED if seed is None else seed, rows_per_record=rows_per_record,
                block_bytes=block_bytes)


if __name__ == "__main__":
  from data_prep import cli
  cli.run_module("tiktok")
