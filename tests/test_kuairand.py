"""data_prep.kuairand on tiny files in the KuaiRand-1K layout."""

import numpy as np
import pytest
import tensorflow as tf

from stem_tfrs import TrainConfig, training
from conftest import tiny_model_config

from data_prep.kuairand import (LABEL_COLUMNS, STANDARD_LOGS, USER_FEATURES, prepare_kuairand)
from data_prep.writer import BadRows, DataError
from stem_tfrs.data import parse_records
from stem_tfrs.schema import Schema

LOG_HEADER = ("user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,"
              "is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,"
              "comment_stay_time,is_profile_enter,is_rand,tab")
DATES = ["20220420", "20220505", "20220506", "20220507", "20220508"]


def write_raw(directory, rows_per_log=300, extra=()):
  rng = np.random.default_rng(0)
  for k, name in enumerate(STANDARD_LOGS):
    lines = [LOG_HEADER]
    for i in range(rows_per_log):
      date = DATES[0] if k == 0 else DATES[1 + i % 4]
      click = int(rng.random() < 0.4)
      lines.append(",".join(map(str, [
          rng.integers(0, 20), rng.integers(0, 50), date, f"{rng.integers(0, 24)}{rng.integers(0, 6)}0",
          1650000000000 + i, click, int(click and rng.random() < 0.2), 0, 0, 0, 0,
          int(click and rng.random() < 0.5), 1000, 20000, 0, 0, 0, 0, rng.integers(0, 4)])))
    if k == 1:
      for position, line in extra:
        lines.insert(position, line)
    (directory / name).write_text("\n".join(lines) + "\n")
  user_header = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
                 "is_video_author", "follow_user_num", "follow_user_num_range", "fans_user_num",
                 "fans_user_num_range", "friend_user_num", "friend_user_num_range",
                 "register_days", "register_days_range"] + [f"onehot_feat{i}" for i in range(18)]
  (directory / "user_features_1k.csv").write_text(",".join(user_header) + "\n" + "".join(
      ",".join([str(u), "high_active" if u % 2 else "full_active", "0", "0", str(u % 2), "5",
                "\"(0,10]\"", "3", "\"[1,10)\"", "1", "\"[1,5)\"", "100", "61-90"]
               + [str((u + i) % 3) for i in range(18)]) + "\n" for u in range(19)))  # no user 19
  (directory / "video_features_basic_1k.csv").write_text(
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
  log = tmp_path / STANDARD_LOGS[1]
  log.write_text(log.read_text().replace(",20220507,", ",2022-05-07,"))
  with pytest.raises(DataError, match=r"the valid split would be empty: none of the 600 usable "
                                      r"rows falls in it under DateSplit\(valid_date='20220507'"):
    prepare_kuairand(str(tmp_path), str(tmp_path / "o3"), min_count=1)
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))) == []


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
