"""data_prep.tiktok on tiny files in the exact ICME 2019 Track 1 layout, malformed rows included."""

import gzip
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_prep.tiktok import COLUMNS, prepare_tiktok
from data_prep.writer import BadRows, DataError
from stem_tfrs.data.records import parse_records
from stem_tfrs.data.schema import Schema

from tests.support import REPO, TINY_MODEL_FLAGS
from tests.test_main import assert_clean_error, main_py


def write_raw(path, rows=400, seed=0, extra_lines=()):
  """A final_track1_train.txt: 12 tab-separated fields, no header; returns the good rows."""
  rng = np.random.default_rng(seed)
  good = []
  for i in range(rows):
    row = [f"{rng.integers(0, 40)}", f"{rng.integers(0, 5)}", f"{rng.integers(0, 60)}",
           f"{rng.integers(0, 20)}", f"{rng.integers(0, 8)}", f"{rng.integers(0, 3)}",
           f"{rng.integers(0, 2)}", f"{int(rng.random() < 0.1)}", f"{rng.integers(0, 30)}",
           f"{rng.integers(0, 15)}", f"{53000000 + i}", f"{rng.integers(5, 30)}"]
    good.append(row)
  lines = ["\t".join(r) for r in good]
  for position, line in extra_lines:
    lines.insert(position, line)
  path.write_text("\n".join(lines) + "\n")
  return good


MALFORMED = [(10, "1\t2\t3"),                                   # line 11: too few fields
             (20, "\t".join(["7"] * 13)),                        # line 21: too many
             (30, "\t".join(["1"] * 6 + ["2", "0"] + ["1"] * 4)),  # line 31: finish = 2
             (40, "\t".join(["1"] * 7 + ["yes"] + ["1"] * 4))]     # line 41: like = 'yes'


def test_prepares_the_paper_split_and_reports_bad_rows(tmp_path):
  good = write_raw(tmp_path / "raw.txt", extra_lines=MALFORMED)
  bad = BadRows()
  stats = prepare_tiktok(str(tmp_path / "raw.txt"), str(tmp_path / "out"), min_count=2,
                         bad_rows=bad, block_bytes=512)
  n = len(good)
  test = math.ceil(0.1 * n)
  valid = math.ceil(0.1 * (n - test))
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [n - test - valid, valid, test]
  assert bad.counts == {"wrong column count": 2, "label outside {0, 1}": 1,
                        "unparsable number": 1}
  assert bad.examples["wrong column count"][0].endswith("raw.txt line 11: 3 fields, expected 12")
  assert "line 41: column 'like': 'yes'" in bad.examples["unparsable number"][0]
  report = json.loads((tmp_path / "out" / "bad_rows.json").read_text())
  assert report["total"] == 4

  schema = Schema.load(str(tmp_path / "out"))
  assert schema.feature_names == ["uid", "item_id", "author_id", "item_city", "channel",
                                  "music_id", "device_id", "video_duration"]
  assert schema.tasks == ["finish", "like"] and schema.group_column == "uid"
  finish = sum(int(r[COLUMNS.index("finish")]) for r in good)
  parsed = [parse_records(schema, batch) for batch in tf.data.TFRecordDataset(
                sum((schema.shard_paths(s) for s in ("train", "valid", "test")), [])).batch(1000)]
  assert sum(int(tf.reduce_sum(p["finish"])) for p in parsed) == finish
  # min_count over the train rows: every uid value seen twice or more there has a row.
  uids = train_values(schema, "uid")
  assert len(uids) == n - test - valid
  expected = {u for u in set(uids) if uids.count(u) >= 2}
  assert set((tmp_path / "out" / "vocab" / "uid.txt").read_text().split()) == expected


def train_values(schema, column):
  """The raw values of `column` in the train split's shards."""
  values = []
  for batch in tf.data.TFRecordDataset(schema.shard_paths("train")).batch(1000):
    values += [v.decode() for v in parse_records(schema, batch)[column].numpy().tolist()]
  return values


def test_default_min_count_is_the_papers_ten(tmp_path):
  good = write_raw(tmp_path / "raw.txt", rows=300)
  prepare_tiktok(str(tmp_path / "raw.txt"), str(tmp_path / "out"))
  vocab = (tmp_path / "out" / "vocab" / "author_id.txt").read_text().split()
  authors = train_values(Schema.load(str(tmp_path / "out")), "author_id")
  assert set(vocab) == {a for a in set(authors) if authors.count(a) >= 10}
  everywhere = [r[3] for r in good]  # counted on all rows, more authors would be kept
  assert set(vocab) < {a for a in set(everywhere) if everywhere.count(a) >= 10}


def test_strict_stops_at_the_first_bad_row(tmp_path):
  write_raw(tmp_path / "raw.txt", extra_lines=MALFORMED)
  with pytest.raises(DataError, match=r"wrong column count: .*raw.txt line 11: 3 fields"):
    prepare_tiktok(str(tmp_path / "raw.txt"), str(tmp_path / "out"), bad_rows=BadRows(True))
  assert not os.path.exists(tmp_path / "out")


def test_missing_and_empty_files_are_one_line_errors(tmp_path):
  with pytest.raises(DataError, match=r"input file .*nope.txt does not exist"):
    prepare_tiktok(str(tmp_path / "nope.txt"), str(tmp_path / "out"))
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(DataError, match=r"input file .*empty.txt is empty"):
    prepare_tiktok(str(tmp_path / "empty.txt"), str(tmp_path / "out"))


def test_unreadable_inputs_are_one_line_errors_naming_file_and_line(tmp_path):
  write_raw(tmp_path / "raw.txt", rows=50)
  prepared = lambda raw, **kw: prepare_tiktok(str(raw), str(tmp_path / "out"), **kw)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match=r"input .*empty is a directory without data files"):
    prepared(tmp_path / "empty")
  (tmp_path / "empty").rmdir()
  lines = (tmp_path / "raw.txt").read_bytes().split(b"\n")
  lines[6] = lines[6].replace(b"\t", b"\xe9\t", 1)  # a Latin-1 byte on line 7
  (tmp_path / "latin.txt").write_bytes(b"\n".join(lines))
  with pytest.raises(DataError, match=r"latin.txt line 7: not utf-8 text \(byte b'\\xe9' at"):
    prepared(tmp_path / "latin.txt")
  with pytest.raises(DataError, match=r"TikTok has no label column\(s\) \['user_city'\]"):
    prepared(tmp_path / "raw.txt", tasks=["finish", "user_city"])
  assert sorted(os.listdir(tmp_path)) == ["latin.txt", "raw.txt"]


def test_a_gzipd_file_prepares_as_the_file_and_a_directory_of_parts_prepares(tmp_path):
  good = write_raw(tmp_path / "raw.txt", rows=500)
  (tmp_path / "raw.txt.gz").write_bytes(gzip.compress((tmp_path / "raw.txt").read_bytes()))
  parts = tmp_path / "parts"
  parts.mkdir()
  lines = (tmp_path / "raw.txt").read_bytes().splitlines(keepends=True)
  (parts / "part-0.txt").write_bytes(b"".join(lines[:200]))
  (parts / "part-1.txt.gz").write_bytes(gzip.compress(b"".join(lines[200:])))
  (parts / "_SUCCESS").write_bytes(b"")
  for raw in ("raw.txt", "raw.txt.gz", "parts"):
    stats = prepare_tiktok(str(tmp_path / raw), str(tmp_path / f"out-{raw}"), min_count=1,
                           block_bytes=1000)
    assert sum(s["rows"] for s in stats.values()) == len(good)
  files = lambda out: {p.name: p.read_bytes() for p in (tmp_path / out).rglob("*") if p.is_file()}
  assert files("out-raw.txt") == files("out-raw.txt.gz")


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
  good = write_raw(tmp_path / "raw.txt", rows=50)
  (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "raw.txt").read_bytes())
  prepare_tiktok(str(tmp_path / "bom.txt"), str(tmp_path / "out"), min_count=1)
  uids = (tmp_path / "out" / "vocab" / "uid.txt").read_text(encoding="utf-8").split("\n")
  assert good[0][0] in uids and not any(u.startswith("\ufeff") for u in uids)


@pytest.mark.slow
def test_same_seed_gives_byte_identical_data_sets_in_separate_processes(tmp_path):
  write_raw(tmp_path / "raw.txt", rows=600)
  for out in ("a", "b"):
    done = subprocess.run([sys.executable, "-m", "data_prep.tiktok", "--raw=raw.txt",
                           f"--out={out}", "--min_count=1"], cwd=tmp_path, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
  names = sorted(os.listdir(tmp_path / "a"))
  assert names == sorted(os.listdir(tmp_path / "b")) and len(names) > 12
  for name in names:
    if os.path.isfile(tmp_path / "a" / name):
      assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow
def test_module_cli_strict_and_main_prepare_then_train(tmp_path):
  write_raw(tmp_path / "raw.txt", rows=3000, extra_lines=MALFORMED)
  strict = subprocess.run([sys.executable, "-m", "data_prep.tiktok", "--raw=raw.txt",
                           "--out=strict", "--strict"], cwd=tmp_path, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
  assert_clean_error(strict, r"wrong column count: raw.txt line 11")
  assert not os.path.exists(tmp_path / "strict")

  prepared = main_py("prepare", "--dataset=tiktok", "--raw=raw.txt", "--out=tiktok",
                     "--min_count=2", "--rows_per_record=1", cwd=tmp_path)
  assert prepared.returncode == 0, prepared.stderr[-2000:]
  assert "skipped 4 bad row(s)" in prepared.stdout
  schema = Schema.load(str(tmp_path / "tiktok"))  # one tf.train.Example a row, as asked
  assert schema.rows_per_record == 1
  record = next(iter(tf.data.TFRecordDataset(schema.shard_paths("train")))).numpy()
  assert len(tf.train.Example.FromString(record).features.feature["uid"].bytes_list.value) == 1
  trained = main_py("train", "--data_dir=tiktok", "--epochs=1", "--batch_size=256",
                    "--export_dir=", "--verbose=0", *TINY_MODEL_FLAGS, cwd=tmp_path)
  assert trained.returncode == 0, trained.stderr[-2000:]
  assert "test   like" in trained.stdout
