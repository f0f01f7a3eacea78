"""KuaiRand-1K -> prepared data set: interaction logs joined with user and video features.

Run as `python -m data_prep.kuairand --raw DIR --out OUT`
(or `python main.py prepare --dataset=kuairand ...`), where DIR holds the
KuaiRand-1K CSVs (comma-separated, with headers):

* logs: `log_standard_4_08_to_4_21_1k.csv`, `log_standard_4_22_to_5_08_1k.csv`
  (and `log_random_4_22_to_5_08_1k.csv`, read only with `--include_random`),
  columns user_id, video_id, date, hourmin, time_ms, is_click, is_like,
  is_follow, is_comment, is_forward, is_hate, long_view, play_time_ms,
  duration_ms, profile_stay_time, comment_stay_time, is_profile_enter,
  is_rand, tab;
* `user_features_1k.csv` (user_id, user_active_degree, ..., *_range,
  onehot_feat0..17), joined on user_id;
* `video_features_basic_1k.csv` (video_id, author_id, video_type, upload_dt,
  upload_type, visible_status, video_duration, server_width, server_height,
  music_id, music_type, tag), joined on video_id. `tag` is a comma-separated
  list: a multivalent feature.

Tasks: is_click, is_like, long_view by default; any 0/1 log column with
`--tasks`. Features: user_id, video_id, tab, hourmin's hour, the user's
categorical columns and the video's author_id, video_type, upload_type,
music_type and tag. The split is by time, as the paper's sizes suggest: the
last log day (`TEST_DATE`, 20220508) is the test split, the day before
(`VALID_DATE`) validation, every earlier day train; vocabularies come from
train. The logs stream in chunks; the feature tables (1,000 users, a few
million videos) are held in memory as categorical columns.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from data_prep.readers import (ENCODING, check_file, check_unique_ids, decode_error,
                               read_delimited)
from data_prep.writer import (ROWS_PER_RECORD, BadRows, Chunk, DataError, check_out, check_tasks,
                              prepare)

STANDARD_LOGS = ["log_standard_4_08_to_4_21_1k.csv", "log_standard_4_22_to_5_08_1k.csv"]
RANDOM_LOG = "log_random_4_22_to_5_08_1k.csv"
USER_FILE = "user_features_1k.csv"
VIDEO_FILE = "video_features_basic_1k.csv"
LABEL_COLUMNS = ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate",
                 "long_view", "is_profile_enter")
TASKS = ("is_click", "is_like", "long_view")
USER_FEATURES = (["user_active_degree", "is_lowactive_period", "is_live_streamer",
                  "is_video_author", "follow_user_num_range", "fans_user_num_range",
                  "friend_user_num_range", "register_days_range"]
                 + [f"onehot_feat{i}" for i in range(18)])
VIDEO_FEATURES = ["author_id", "video_type", "upload_type", "music_type", "tag"]
FEATURES = ["user_id", "video_id", "tab", "hour"] + USER_FEATURES + VIDEO_FEATURES
VALID_DATE, TEST_DATE = "20220507", "20220508"
DEFAULT_MIN_COUNT = 5
DEFAULT_SEED = 42


@dataclasses.dataclass(frozen=True)
class DateSplit:
  """Split by the log's `date` column: test_date -> test, valid_date -> valid, else train."""
  valid_date: str = VALID_DATE
  test_date: str = TEST_DATE
  vocabulary_from_train = True

  def assigner(self, total_rows: Optional[int], seed: int) -> Callable[[pd.DataFrame], np.ndarray]:
    del total_rows, seed  # deterministic by date

    def assign(frame: pd.DataFrame) -> np.ndarray:
      date = frame["date"].to_numpy()
      return np.where(date == self.test_date, 2, np.where(date == self.valid_date, 1, 0))
    return assign


def _table(path: str, key: str, columns: Sequence[str]) -> pd.DataFrame:
  """A feature table indexed by its unique `key` column, as categorical columns."""
  check_file(path)
  try:
    header = pd.read_csv(path, nrows=0, encoding=ENCODING).columns
    missing = [c for c in [key, *columns] if c not in header]
    if missing:
      raise DataError(f"{path}: missing column(s) {missing}; found {list(header)}")
    table = pd.read_csv(path, usecols=[key, *columns], dtype="string", keep_default_na=False,
                        index_col=False, encoding=ENCODING)
  except UnicodeDecodeError:
    raise decode_error(path, ENCODING) from None
  except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
    raise DataError(f"{path}: {str(e).strip()}") from None
  check_unique_ids(table, key, path)
  return table.set_index(key).astype("category")  # small in memory: codes + distinct values


def prepare_kuairand(raw: str, out_dir: str, *, min_count: int = DEFAULT_MIN_COUNT,
                     seed: int = DEFAULT_SEED, tasks: Optional[Sequence[str]] = None,
                     bad_rows: Optional[BadRows] = None, overwrite: bool = False,
                     include_random: bool = False, chunk_rows: int = 200_000,
                     rows_per_record: int = ROWS_PER_RECORD) -> dict:
  """Prepares KuaiRand-1K from directory `raw` in `out_dir`; returns the stats."""
  tasks = check_tasks("KuaiRand", tasks or TASKS, LABEL_COLUMNS)
  check_out(out_dir, overwrite, inputs=[raw])  # before reading the feature tables
  if not os.path.isdir(raw):
    raise DataError(f"--raw {raw} is not a directory holding the KuaiRand-1K CSVs")
  bad_rows = bad_rows if bad_rows is not None else BadRows()
  users = _table(os.path.join(raw, USER_FILE), "user_id", USER_FEATURES)
  videos = _table(os.path.join(raw, VIDEO_FILE), "video_id", VIDEO_FEATURES)
  logs = [os.path.join(raw, name) for name in STANDARD_LOGS + ([RANDOM_LOG] if include_random
                                                                else [])]
  required = ["user_id", "video_id", "date", "hourmin", "tab", *tasks]

  def chunks():
    for path in logs:
      for chunk in read_delimited(path, sep=",", required=required, bad_rows=bad_rows,
                                  chunk_rows=chunk_rows):
        frame = chunk.frame
        frame["hour"] = frame["hourmin"].str.zfill(4).str[:2]
        joined = frame.join(users, on="user_id").join(videos, on="video_id")
        for column in USER_FEATURES + VIDEO_FEATURES:  # ids without a feature row
          joined[column] = joined[column].astype("string").fillna("")
        yield Chunk(joined, chunk.source)

  return prepare(chunks, features=FEATURES, labels=tasks, group_column="user_id",
                 out_dir=out_dir, min_count=min_count, seed=seed, split=DateSplit(),
                 overwrite=overwrite, bad_rows=bad_rows, multivalent={"tag": ","},
                 rows_per_record=rows_per_record, inputs=[raw])


if __name__ == "__main__":
  from data_prep import cli
  cli.run_module("kuairand")
