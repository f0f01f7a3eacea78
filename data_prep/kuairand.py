"""KuaiRand (1K, Pure or 27K) -> prepared data set: logs joined with user and video features.

Run as `python -m data_prep.kuairand --raw DIR --out OUT`
(or `python main.py prepare --dataset=kuairand ...`), where DIR holds the CSVs
(comma-separated, with headers) of one KuaiRand release. The three releases
have the same columns under their own file names (`RELEASES`): KuaiRand-1K's
end in `_1k`, KuaiRand-Pure's in `_pure`, KuaiRand-27K's in `_27k` (its
standard logs cut in `_part1` and `_part2`). The release is recognised by the
names found in DIR and logged; a directory holding none of them, or files of
more than one release, is refused in one line. The files (KuaiRand-1K's
names):

* standard logs: `log_standard_4_08_to_4_21_1k.csv`,
  `log_standard_4_22_to_5_08_1k.csv` (and `log_random_4_22_to_5_08_1k.csv`,
  read only with `include_random`), columns user_id, video_id, date,
  hourmin, time_ms, is_click, is_like, is_follow, is_comment, is_forward,
  is_hate, long_view, play_time_ms, duration_ms, profile_stay_time,
  comment_stay_time, is_profile_enter, is_rand, tab. A directory holding only
  some of them (a slice, a download in progress) is prepared from those
  there, and the log names the files read and those missing;
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
last log day (`TEST_DATE`, 20220508, the same in every release) is the test
split, the day before (`VALID_DATE`) validation, every earlier day train;
vocabularies come from train. The logs stream in chunks; the feature tables
(about 1,000 users and a few million videos in KuaiRand-1K, 27,285 users and
tens of millions of videos in KuaiRand-27K) are held in memory as categorical
columns.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import pandas as pd

from data_prep.readers import (ENCODING, check_file, check_unique_ids, decode_error,
                               read_delimited)
from data_prep.writer import (ROWS_PER_RECORD, BadRows, Chunk, DataError, check_out, check_tasks,
                              prepare)



@dataclasses.dataclass(frozen=True)
class Release:
  """One KuaiRand release's file names (the columns are the same in every release)."""
  name: str
  standard_logs: Tuple[str, ...]
  random_log: str
  user_file: str
  video_file: str

  @property
  def files(self) -> Tuple[str, ...]:
    """Every file name of the release that this loader reads."""
    return (*self.standard_logs, self.random_log, self.user_file, self.video_file)


RELEASES = (
    Release("KuaiRand-1K",
            ("log_standard_4_08_to_4_21_1k.csv", "log_standard_4_22_to_5_08_1k.csv"),
            "log_random_4_22_to_5_08_1k.csv", "user_features_1k.csv",
            "video_features_basic_1k.csv"),
    Release("KuaiRand-Pure",
            ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv"),
            "log_random_4_22_to_5_08_pure.csv", "user_features_pure.csv",
            "video_features_basic_pure.csv"),
    Release("KuaiRand-27K",
            ("log_standard_4_08_to_4_21_27k_part1.csv", "log_standard_4_08_to_4_21_27k_part2.csv",
             "log_standard_4_22_to_5_08_27k_part1.csv", "log_standard_4_22_to_5_08_27k_part2.csv"),
            "log_random_4_22_to_5_08_27k.csv", "user_features_27k.csv",
            "video_features_basic_27k.csv"),
)
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


def find_release(raw: str, include_random: bool = False) -> Tuple[Release, List[str]]:
  """The KuaiRand release whose files directory `raw` holds, and the logs to read.

  Args:
    raw: The directory.
    include_random: Whether the release's random-exposure log is read too.

  Returns:
    The release and the names of its logs found in `raw` (the standard logs
    there, in date order, then the random log if asked for).

  Raises:
    DataError: `raw` holds files of no release or of more than one, or none of
      the release's standard logs, or not the random log asked for.
  """
  names = set(os.listdir(raw))
  found = [(release, [n for n in release.files if n in names]) for release in RELEASES]
  found = [(release, files) for release, files in found if files]
  if not found:
    seen = sorted(names)
    raise DataError(
        f"--raw {raw} holds no KuaiRand release's files: expected user_features_X.csv, "
        "video_features_basic_X.csv and log_standard_*_X*.csv, X being 1k (KuaiRand-1K), pure "
        "(KuaiRand-Pure) or 27k (KuaiRand-27K); found "
        + (", ".join(seen[:5]) + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")
           if seen else "nothing"))
  if len(found) > 1:
    listed = "; ".join(f"{release.name}: {', '.join(files)}" for release, files in found)
    raise DataError(f"--raw {raw} mixes KuaiRand releases: {listed}; expected the files of "
                    "one release")
  [(release, files)] = found
  logs = [n for n in release.standard_logs if n in names]
  if not logs:
    raise DataError(f"--raw {raw} holds {release.name}'s {', '.join(files)} but none of its "
                    f"standard logs: expected {', '.join(release.standard_logs)}")
  if include_random:
    if release.random_log not in names:
      raise DataError(f"--raw {raw} has no {release.random_log}, {release.name}'s random "
                      "log, asked for with include_random")
    logs.append(release.random_log)
  return release, logs


def prepare_kuairand(raw: str, out_dir: str, *, min_count: int = DEFAULT_MIN_COUNT,
                     seed: int = DEFAULT_SEED, tasks: Optional[Sequence[str]] = None,
                     bad_rows: Optional[BadRows] = None, overwrite: bool = False,
                     include_random: bool = False, chunk_rows: int = 200_000,
                     rows_per_record: int = ROWS_PER_RECORD) -> dict:
  """Prepares the KuaiRand release in directory `raw` in `out_dir`; returns the stats."""
  tasks = check_tasks("KuaiRand", tasks or TASKS, LABEL_COLUMNS)
  check_out(out_dir, overwrite, inputs=[raw])  # before reading the feature tables
  if not os.path.isdir(raw):
    raise DataError(f"--raw {raw} is not a directory holding the CSVs of a KuaiRand release")
  release, log_names = find_release(raw, include_random)
  missing = [n for n in release.standard_logs if n not in log_names]
  logging.info("found %s in %s; reading %s", release.name, raw,
               ", ".join([*log_names, release.user_file, release.video_file]))
  if missing:  # a slice or a partial download: prepared as it is, and said so
    logging.warning("%s: %s's %s not there; preparing the standard log(s) found", raw,
                    release.name, ", ".join(missing))
  bad_rows = bad_rows if bad_rows is not None else BadRows()
  users = _table(os.path.join(raw, release.user_file), "user_id", USER_FEATURES)
  videos = _table(os.path.join(raw, release.video_file), "video_id", VIDEO_FEATURES)
  logs = [os.path.join(raw, name) for name in log_names]
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
