"""data_prep.qkvideo on tiny files in Tenrec's QK-video.csv layout."""

import numpy as np
import pytest

from data_prep.qkvideo import prepare_qkvideo
from data_prep.writer import BadRows, DataError
from stem_tfrs import TrainConfig, training
from stem_tfrs.data.schema import Schema

from tests.support import tiny_model_config

HEADER = "user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age"


def write_raw(path, rows=500, header=HEADER, extra=()):
  rng = np.random.default_rng(1)
  lines = [header]
  for _ in range(rows):
    click = int(rng.random() < 0.3)
    lines.append(",".join(map(str, [
        rng.integers(0, 50), rng.integers(0, 80), click, int(click and rng.random() < 0.05),
        int(click and rng.random() < 0.2), 0, rng.integers(0, 6), rng.integers(0, 4),
        rng.integers(0, 3), rng.integers(0, 5)])))
  for position, line in extra:
    lines.insert(position, line)
  path.write_text("\n".join(lines) + "\n")


def test_default_tasks_features_and_80_10_10_split(tmp_path):
  write_raw(tmp_path / "QK-video.csv", extra=[(5, "1,2,3"), (9, "1,2,7,0,0,0,1,1,1,1")])
  bad = BadRows()
  stats = prepare_qkvideo(str(tmp_path / "QK-video.csv"), str(tmp_path / "out"), min_count=1,
                          bad_rows=bad)
  schema = Schema.load(str(tmp_path / "out"))
  assert schema.tasks == ["click", "like"] and schema.group_column == "user_id"
  assert schema.feature_names == ["user_id", "item_id", "video_category", "gender", "age"]
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [400, 50, 50]
  categories = (tmp_path / "out" / "vocab" / "video_category.txt").read_text().split()
  assert sorted(categories) == [str(c) for c in range(6)]  # every category of the raw file
  assert bad.counts == {"wrong column count": 1, "label outside {0, 1}": 1}
  assert bad.examples["wrong column count"][0].endswith("QK-video.csv line 6: 3 fields, "
                                                        "expected 10")


def test_any_label_column_can_be_a_task(tmp_path):
  write_raw(tmp_path / "QK-video.csv")
  prepare_qkvideo(str(tmp_path / "QK-video.csv"), str(tmp_path / "out"),
                  tasks=["click", "follow", "share"])
  assert Schema.load(str(tmp_path / "out")).tasks == ["click", "follow", "share"]
  with pytest.raises(DataError, match=r"no label column\(s\) \['watching_times'\]"):
    prepare_qkvideo(str(tmp_path / "QK-video.csv"), str(tmp_path / "o2"),
                    tasks=["watching_times"])


def test_missing_required_column_is_named(tmp_path):
  write_raw(tmp_path / "QK-video.csv", header=HEADER.replace(",like,", ",likes,"))
  with pytest.raises(DataError, match=r"QK-video.csv: missing column\(s\) \['like'\]"):
    prepare_qkvideo(str(tmp_path / "QK-video.csv"), str(tmp_path / "out"))


@pytest.mark.slow
def test_trains_on_the_prepared_data_without_further_flags(tmp_path):
  write_raw(tmp_path / "QK-video.csv", rows=2000)
  prepare_qkvideo(str(tmp_path / "QK-video.csv"), str(tmp_path / "out"), min_count=1)
  config = TrainConfig(data_dir=str(tmp_path / "out"), run_dir=str(tmp_path / "run"),
                       export_dir="", epochs=1, batch_size=128)
  metrics = training.train(tiny_model_config(), config, verbose=0).metrics
  assert set(metrics["test"]) == {"click", "like"}


def test_strict_stops_at_the_first_bad_row(tmp_path):
  write_raw(tmp_path / "QK-video.csv", extra=[(7, "1,2,3")])
  with pytest.raises(DataError, match=r"wrong column count: .*QK-video.csv line 8: 3 fields"):
    prepare_qkvideo(str(tmp_path / "QK-video.csv"), str(tmp_path / "out"),
                    bad_rows=BadRows(strict=True))
  assert not (tmp_path / "out").exists()
