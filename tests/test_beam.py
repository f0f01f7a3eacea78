"""data_prep.beam: the Beam pipeline writes the data set the local path writes.

Runs where the beam extra is installed (`pip install -e ".[beam]"`); skipped
elsewhere. The comparisons run the DirectRunner in multi-processing mode
(two worker processes, each reading its own files); the refusals run it in
this process, which is quicker and reaches the same driver code.
"""

import gzip
import json
import os
import sys

import pytest

pytest.importorskip("apache_beam")

import data_prep  # noqa: E402
from data_prep import beam as data_prep_beam  # noqa: E402
from data_prep import beam_flags, cli  # noqa: E402
from data_prep.logs import prepare_logs  # noqa: E402
from data_prep.tiktok import prepare_tiktok  # noqa: E402
from data_prep.writer import BadRows, DataError  # noqa: E402

from tests.test_logs import write_logs  # noqa: E402
from tests.test_tiktok import write_raw  # noqa: E402

MULTI_PROCESSING = "--direct_num_workers=2 --direct_running_mode=multi_processing"
LOGS = dict(features=["user_id", "item_id", "tags"], tasks=["click", "like"],
            group_column="user_id", multivalent={"tags": "|"}, numeric=["num"], log1p=["num"],
            split_column="day", valid_from="20240103", test_from="20240104", min_count=2)


def data_set(out):
  """Every file of a prepared data set: relative path -> bytes (bad_rows.json: parsed)."""
  files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
  files["bad_rows.json"] = json.loads(files["bad_rows.json"])
  return files


def write_numbered_logs(path, rows, seed, extra=()):
  """`write_logs`' file with a numeric column `num` appended."""
  write_logs(path, rows, seed=seed, extra=extra)
  header, *lines = path.read_text().splitlines()
  path.write_text("\n".join([header + ",num"] + [f"{line},{n % 13 * 1.5}"
                                                 for n, line in enumerate(lines)]) + "\n")


def on_beam(name, raw, out, *, beam_options="", **kwargs):
  return data_prep_beam.prepare_on_beam(name, str(raw), str(out), runner="DirectRunner",
                                        beam_options=beam_options, **kwargs)


def test_logs_with_a_date_split_prepare_to_the_local_data_set(tmp_path):
  raw = tmp_path / "logs"
  raw.mkdir()
  # A bad label in one file, a short line in the other.
  write_numbered_logs(raw / "part-0.csv", 400, seed=1, extra=[(10, "u1,i1,a,20240101,1,2,x")])
  write_numbered_logs(raw / "part-1.csv", 300, seed=2, extra=[(5, "u2,i2,b,20240102,1")])
  local_bad, beam_bad = BadRows(), BadRows()
  local = prepare_logs(str(raw), str(tmp_path / "local"), bad_rows=local_bad, block_bytes=4096,
                       **LOGS)
  stats = on_beam("logs", raw, tmp_path / "beam", beam_options=MULTI_PROCESSING, sep=",",
                  bad_rows=beam_bad, **LOGS)
  assert stats == local
  assert beam_bad.to_json() == local_bad.to_json()
  assert local_bad.counts == {"label outside {0, 1}": 1, "wrong column count": 1}
  expected = data_set(tmp_path / "local")
  assert {"vocab/user_id.txt", "vocab/item_id.txt", "vocab/tags.txt", "schema.json",
          "stats.json", "train-00000-of-00008.tfrecord"} <= set(expected)
  # Vocabularies, schema (numeric moments included), stats, and every shard byte for byte:
  # the same rows in each split, in the same records.
  assert data_set(tmp_path / "beam") == expected
  assert sorted(os.listdir(tmp_path)) == ["beam", "local", "logs"]  # no temporary left


def test_tiktok_parts_with_the_exact_split_prepare_to_the_local_data_set(tmp_path):
  raw = tmp_path / "parts"
  raw.mkdir()
  (raw / "part-00000").write_text("")  # an empty part, as Spark writes them: no file index
  write_raw(raw / "part-00001", rows=500, seed=1, extra_lines=[(7, "1\t2\t3")])
  write_raw(tmp_path / "plain", rows=400, seed=2)
  (raw / "part-00002.gz").write_bytes(gzip.compress((tmp_path / "plain").read_bytes()))
  (raw / "_SUCCESS").write_text("")
  local = prepare_tiktok(str(raw), str(tmp_path / "local"), min_count=2, bad_rows=BadRows())
  out = tmp_path / "beam"
  # As `python -m data_prep.tiktok --runner=DirectRunner --beam_options=...` calls it.
  tiktok = beam_flags.loader("tiktok", cli.loaders()["tiktok"], runner="DirectRunner",
                             beam_options=MULTI_PROCESSING)
  stats = tiktok.prepare(str(raw), str(out), bad_rows=BadRows(), overwrite=False, min_count=2,
                         seed=tiktok.seed, tasks=tiktok.tasks, rows_per_record=64)
  assert stats == local
  assert {s: v["rows"] for s, v in local.items()} == {"train": 729, "valid": 81, "test": 90}
  assert data_set(out) == data_set(tmp_path / "local")
  assert data_set(out)["bad_rows.json"]["by_kind"]["wrong column count"]["first"] == [
      f"{raw / 'part-00001'} line 8: 3 fields, expected 12"]


def test_strict_stops_on_the_bad_row_the_local_path_names_and_writes_nothing(tmp_path):
  raw = tmp_path / "raw.txt"
  write_raw(raw, rows=300, extra_lines=[(200, "\t".join(["1"] * 6 + ["7"] + ["1"] * 5))])
  with pytest.raises(DataError) as local:
    prepare_tiktok(str(raw), str(tmp_path / "local"), bad_rows=BadRows(strict=True))
  strict = BadRows(strict=True)
  with pytest.raises(DataError) as beam:
    on_beam("tiktok", raw, tmp_path / "beam", bad_rows=strict)
  assert str(beam.value) == str(local.value)
  assert strict.total == 0  # nothing reported as skipped: it stopped
  assert "line 201" in str(beam.value)
  assert sorted(os.listdir(tmp_path)) == ["raw.txt"]


def test_a_failed_run_keeps_the_data_set_it_would_replace(tmp_path):
  raw = tmp_path / "logs"
  raw.mkdir()
  write_numbered_logs(raw / "part-0.csv", 200, seed=1)
  on_beam("logs", raw, tmp_path / "out", sep=",", **LOGS)
  before = data_set(tmp_path / "out")
  (raw / "part-1.csv").write_text("user_id,item_id\nu1,i1\n")  # lacks the other columns
  with pytest.raises(DataError) as local:
    prepare_logs(str(raw), str(tmp_path / "out"), overwrite=True, **LOGS)
  with pytest.raises(DataError) as beam:
    on_beam("logs", raw, tmp_path / "out", sep=",", overwrite=True, **LOGS)
  assert str(beam.value) == str(local.value)
  assert "part-1.csv: missing column(s)" in str(beam.value)
  assert data_set(tmp_path / "out") == before
  assert sorted(os.listdir(tmp_path)) == ["logs", "out"]
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    on_beam("logs", raw, tmp_path / "out", sep=",", **LOGS)


def test_loaders_joining_feature_tables_are_refused_in_one_line(tmp_path):
  with pytest.raises(DataError, match="kuairand is not prepared on Beam"):
    on_beam("kuairand", tmp_path, tmp_path / "out")


def test_without_apache_beam_runner_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
  raw = tmp_path / "raw.txt"
  write_raw(raw, rows=20)
  # This interpreter as if the extra were not installed. (`data_prep.cli.prepare_from_flags`
  # prints the ValueError as its one "error: ..." line and exits 1.)
  monkeypatch.setitem(sys.modules, "apache_beam", None)
  monkeypatch.delitem(sys.modules, "data_prep.beam")
  monkeypatch.delattr(data_prep, "beam")
  tiktok = beam_flags.loader("tiktok", cli.loaders()["tiktok"], runner="DirectRunner",
                             beam_options="")
  with pytest.raises(ValueError) as error:
    tiktok.prepare(str(raw), str(tmp_path / "out"), bad_rows=BadRows(), overwrite=False,
                   min_count=1, seed=1, tasks=tiktok.tasks, rows_per_record=64)
  assert str(error.value) == ('--runner=DirectRunner needs Apache Beam, which is not '
                              'installed: pip install -e ".[beam]"')
  assert sorted(os.listdir(tmp_path)) == ["raw.txt"]


def test_beam_options_without_a_runner_are_refused(tmp_path):
  tiktok = beam_flags.loader("tiktok", cli.loaders()["tiktok"], runner="",
                             beam_options="--direct_num_workers=2")
  with pytest.raises(ValueError, match="--beam_options applies only with --runner"):
    tiktok.prepare(str(tmp_path / "raw.txt"), str(tmp_path / "out"))
  local = cli.loaders()["tiktok"]
  assert beam_flags.loader("tiktok", local, runner="", beam_options="") is local


def test_gzipped_parts_on_beam_prepare_to_the_data_set_of_the_file_they_were_cut_from(
    tmp_path):
  write_raw(tmp_path / "raw.txt", rows=700, seed=3, extra_lines=[(50, "1\t2\t3")])
  lines = (tmp_path / "raw.txt").read_text().splitlines()
  parts = tmp_path / "parts"
  parts.mkdir()
  for part, (a, b) in enumerate([(0, 10), (10, 11), (11, 400), (400, len(lines))]):
    text = "".join(line + "\n" for line in lines[a:b])
    (parts / f"part-{part:05d}.gz").write_bytes(gzip.compress(text.encode("utf-8")))
  local = prepare_tiktok(str(tmp_path / "raw.txt"), str(tmp_path / "local"), min_count=2,
                         bad_rows=BadRows())
  stats = on_beam("tiktok", parts, tmp_path / "beam", beam_options=MULTI_PROCESSING,
                  min_count=2, bad_rows=BadRows())
  assert stats == local
  expected = data_set(tmp_path / "local")
  found = data_set(tmp_path / "beam")
  # bad_rows.json names each input's own file and line; everything else is byte for byte.
  assert found.pop("bad_rows.json")["total"] == expected.pop("bad_rows.json")["total"] == 1
  assert found == expected
