"""data_prep.kuairand on tiny files in the layouts of KuaiRand-1K, -Pure and -27K, and on the
real KuaiRand-Pure slice in ../shared/data/kuairand_pure_slice when it is there."""

import csv
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import TrainConfig, training
from tests.support import REPO, tiny_model_config

from data_prep.kuairand import (LABEL_COLUMNS, RELEASES, TASKS, USER_FEATURES, find_release,
                                prepare_kuairand)
from data_prep.writer import BadRows, DataError
from stem_tfrs.data.records import parse_records
from stem_tfrs.data.schema import Schema

K1, PURE = RELEASES[:2]
LOG_HEADER = ("user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,"
              "is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,"
              "comment_stay_time,is_profile_enter,is_rand,tab")
DATES = ["20220420", "20220505", "20220506", "20220507", "20220508"]
SLICE = os.path.join(REPO, "..", "shared", "data", "kuairand_pure_slice")


def write_raw(directory, rows_per_log=300, extra=(), release=K1):
  """Tiny CSVs under `release`'s names: the 4_08_to_4_21 logs all train (one date), the
  later logs' rows cycle through two train dates, the valid date and the test date."""
  rng = np.random.default_rng(0)
  for name in release.standard_logs:
    early = "4_08_to_4_21" in name
    lines = [LOG_HEADER]
    for i in range(rows_per_log):
      date = DATES[0] if early else DATES[1 + i % 4]
      click = int(rng.random() < 0.4)
      lines.append(",".join(map(str, [
          rng.integers(0, 20), rng.integers(0, 50), date, f"{rng.integers(0, 24)}{rng.integers(0, 6)}0",
          1650000000000 + i, click, int(click and rng.random() < 0.2), 0, 0, 0, 0,
          int(click and rng.random() < 0.5), 1000, 20000, 0, 0, 0, 0, rng.integers(0, 4)])))
    if name == release.standard_logs[-1]:
      for position, line in extra:
        lines.insert(position, line)
    (directory / name).write_text("\n".join(lines) + "\n")
  user_header = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
                 "is_video_author", "follow_user_num", "follow_user_num_range", "fans_user_num",
                 "fans_user_num_range", "friend_user_num", "friend_user_num_range",
                 "register_days", "register_days_range"] + [f"onehot_feat{i}" for i in range(18)]
  (directory / release.user_file).write_text(",".join(user_header) + "\n" + "".join(
      ",".join([str(u), "high_active" if u % 2 else "full_active", "0", "0", str(u % 2), "5",
                "\"(0,10]\"", "3", "\"[1,10)\"", "1", "\"[1,5)\"", "100", "61-90"]
               + [str((u + i) % 3) for i in range(18)]) + "\n" for u in range(19)))  # no user 19
  (directory / release.video_file).write_text(
      "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
      "server_width,server_height,music_id,music_type,tag\n" + "".join(
          f'{v},{v % 7},NORMAL,2022-04-01,ShortImport,public,{v * 1000},720,1280,{v % 5},'
          f'{v % 3},"{v % 4},{v % 9}"\n' for v in range(50)))


def test_time_split_join_and_tags(tmp_path):
  write_raw(tmp_path, extra=[(3, "1,2,3"), (8, "1,2,20220508,1200,1,7,0,0,0,0,0,0,1,1,0,0,0,0,1")])
  bad = BadRows()
  stats = prepare_kuairand(str(tmp_path), str(tmp_path / "out"), min_count=1, bad_rows=bad)
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [300 + 150, 75, 75]
  assert bad.counts == {"wrong column count": 1, "label outside {0, 1}": 1}
  schema = Schema.load(str(tmp_path / "out"))
  assert schema.tasks == ["is_click", "is_like", "long_view"]
  assert schema.feature("tag").multivalent
  assert set(USER_FEATURES) <= set(schema.feature_names)
  assert "0" in (tmp_path / "out" / "vocab" / "tag.txt").read_text().split()
  rows = parse_records(schema, next(iter(tf.data.TFRecordDataset(
      schema.shard_paths("train")).batch(10_000))))
  assert rows["tag"].row_lengths().numpy().max() == 2
  video = rows["video_id"].numpy()[0].decode()
  assert sorted(t.decode() for t in rows["tag"][0].numpy()) == sorted(
      {str(int(video) % 4), str(int(video) % 9)})
  degrees = dict(zip(rows["user_id"].numpy(), rows["user_active_degree"].numpy()))
  assert degrees.get(b"19", b"") == b""  # a user without a feature row: empty, the OOV row
  assert degrees[b"3"] == b"high_active"


def test_any_label_column_and_missing_inputs(tmp_path):
  write_raw(tmp_path)
  prepare_kuairand(str(tmp_path), str(tmp_path / "out"), tasks=["is_click", "is_follow"])
  assert Schema.load(str(tmp_path / "out")).tasks == ["is_click", "is_follow"]
  with pytest.raises(DataError, match="no label column"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "o2"), tasks=["play_time_ms"])
  (tmp_path / "user_features_1k.csv").unlink()
  with pytest.raises(DataError, match="user_features_1k.csv does not exist"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "o3"))
  assert set(LABEL_COLUMNS) >= {"is_click", "is_like", "long_view"}


def test_feature_tables_and_dates_that_would_corrupt_the_join_or_split(tmp_path):
  write_raw(tmp_path)
  videos = tmp_path / "video_features_basic_1k.csv"
  original = videos.read_text()
  videos.write_text(original + original.splitlines()[3] + "\n")  # video 2 listed twice
  with pytest.raises(DataError, match=r"video_features_basic_1k.csv: video_id '2' has more "
                                      r"than one row"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "o1"))
  videos.write_text("")
  with pytest.raises(DataError, match=r"input file .*video_features_basic_1k.csv is empty"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "o2"))
  videos.write_text(original)
  log = tmp_path / K1.standard_logs[1]
  log.write_text(log.read_text().replace(",20220507,", ",2022-05-07,"))
  with pytest.raises(DataError, match=r"the valid split would be empty: none of the 600 usable "
                                      r"rows falls in it under DateSplit\(valid_date='20220507'"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "o3"), min_count=1)
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))) == []


@pytest.mark.slow
def test_trains_on_the_prepared_data_without_further_flags(tmp_path):
  write_raw(tmp_path, rows_per_log=600)
  prepare_kuairand(str(tmp_path), str(tmp_path / "out"), min_count=1)
  config = TrainConfig(data_dir=str(tmp_path / "out"), run_dir=str(tmp_path / "run"),
                       export_dir="", epochs=1, batch_size=128)
  metrics = training.train(tiny_model_config(), config, verbose=0).metrics
  assert set(metrics["test"]) == {"is_click", "is_like", "long_view"}


def test_strict_stops_at_the_first_bad_row(tmp_path):
  write_raw(tmp_path, extra=[(5, "1,2,3")])
  with pytest.raises(DataError, match=r"wrong column count: .*log_standard_4_22_to_5_08_1k.csv "
                                      r"line 6: 3 fields, expected 19"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "out"), bad_rows=BadRows(strict=True))
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_every_release_is_recognised_by_its_file_names(release, tmp_path, caplog):
  raw = tmp_path / "raw"
  raw.mkdir()
  write_raw(raw, rows_per_log=40, release=release)
  caplog.set_level(logging.INFO, logger="absl")
  stats = prepare_kuairand(str(raw), str(tmp_path / "out"), min_count=1)
  early = sum("4_08_to_4_21" in n for n in release.standard_logs)
  late = len(release.standard_logs) - early
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [
      40 * early + 20 * late, 10 * late, 10 * late]
  assert Schema.load(str(tmp_path / "out")).tasks == list(TASKS)
  assert f"found {release.name} in {raw}; reading {', '.join(release.standard_logs)}, " \
         f"{release.user_file}, {release.video_file}" in caplog.text
  assert "not there" not in caplog.text


def test_a_partial_release_prepares_the_logs_there_and_names_them(tmp_path, caplog):
  write_raw(tmp_path, rows_per_log=40, release=PURE)
  (tmp_path / PURE.standard_logs[0]).unlink()  # as in the real slice: 4_22_to_5_08 only
  assert find_release(str(tmp_path)) == (PURE, ["log_standard_4_22_to_5_08_pure.csv"])
  caplog.set_level(logging.INFO, logger="absl")
  stats = prepare_kuairand(str(tmp_path), str(tmp_path / "out"), min_count=1)
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [20, 10, 10]
  assert ("reading log_standard_4_22_to_5_08_pure.csv, user_features_pure.csv, "
          "video_features_basic_pure.csv") in caplog.text
  assert "KuaiRand-Pure's log_standard_4_08_to_4_21_pure.csv not there" in caplog.text


@pytest.mark.slow
def test_the_command_names_the_release_it_found(tmp_path):
  write_raw(tmp_path, rows_per_log=40, release=PURE)
  (tmp_path / PURE.standard_logs[0]).unlink()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.kuairand", f"--raw={tmp_path}",
       f"--out={tmp_path / 'out'}", "--min_count=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"found KuaiRand-Pure in {tmp_path}; reading log_standard_4_22_to_5_08_pure.csv" \
      in result.stderr
  assert "log_standard_4_08_to_4_21_pure.csv not there" in result.stderr
  assert "train 20 rows, valid 10 rows, test 10 rows" in result.stdout


def test_a_directory_mixing_releases_or_holding_none_is_refused(tmp_path):
  write_raw(tmp_path, rows_per_log=40, release=K1)
  (tmp_path / "user_features_pure.csv").write_text((tmp_path / K1.user_file).read_text())
  with pytest.raises(DataError) as refused:
    prepare_kuairand(str(tmp_path), str(tmp_path / "out"))
  assert str(refused.value) == (
      f"--raw {tmp_path} mixes KuaiRand releases: KuaiRand-1K: log_standard_4_08_to_4_21_1k.csv, "
      "log_standard_4_22_to_5_08_1k.csv, user_features_1k.csv, video_features_basic_1k.csv; "
      "KuaiRand-Pure: user_features_pure.csv; expected the files of one release")
  other = tmp_path / "other"
  other.mkdir()
  with pytest.raises(DataError, match=r"other holds no KuaiRand release's files: expected "
                                      r"user_features_X.csv, .*27k \(KuaiRand-27K\); found "
                                      r"nothing$"):
    prepare_kuairand(str(other), str(tmp_path / "out"))
  (other / "log_standard_4_22_to_5_08.csv").write_text(LOG_HEADER + "\n")
  with pytest.raises(DataError, match=r"; found log_standard_4_22_to_5_08.csv$"):
    prepare_kuairand(str(other), str(tmp_path / "out"))
  (tmp_path / "user_features_pure.csv").unlink()
  for name in K1.standard_logs:
    (tmp_path / name).unlink()
  with pytest.raises(DataError, match=r"holds KuaiRand-1K's user_features_1k.csv, "
                                      r"video_features_basic_1k.csv but none of its standard "
                                      r"logs: expected log_standard_4_08_to_4_21_1k.csv, "
                                      r"log_standard_4_22_to_5_08_1k.csv$"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "out"))
  write_raw(tmp_path, rows_per_log=40, release=K1)
  with pytest.raises(DataError, match=r"has no log_random_4_22_to_5_08_1k.csv, KuaiRand-1K's "
                                      r"random log, asked for with include_random$"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "out"), include_random=True)
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SLICE), reason=f"no KuaiRand-Pure slice at {SLICE}")
def test_the_real_kuairand_pure_slice_prepares_to_its_readme_figures(tmp_path):
  # Figures from the slice's README.md: 228,329 rows, the last day (05-08) 15,747 rows,
  # positive rates over all rows is_click 44.19%, long_view 31.08%, is_like 1.715%.
  log = os.path.join(SLICE, "log_standard_4_22_to_5_08_pure.csv")
  with open(log, newline="") as f:
    valid_rows = sum(row["date"] == "20220507" for row in csv.DictReader(f))
  bad = BadRows()
  stats = prepare_kuairand(SLICE, str(tmp_path / "out"), bad_rows=bad)
  rows = {s: stats[s]["rows"] for s in ("train", "valid", "test")}
  assert bad.total == 0
  assert sum(rows.values()) == 228_329
  assert rows["test"] == 15_747 and rows["valid"] == valid_rows
  assert Schema.load(str(tmp_path / "out")).tasks == ["is_click", "is_like", "long_view"]
  for task, rate, digits in (("is_click", 0.4419, 4), ("long_view", 0.3108, 4),
                             ("is_like", 0.01715, 5)):
    overall = sum(stats[s]["positive_rate"][task] * rows[s] for s in rows) / 228_329
    assert round(overall, digits) == rate, (task, overall)
