"""data_prep.logs: your own logs, as delimited files with a header line, in any number of files."""

import numpy as np
import pytest

from data_prep.logs import prepare_logs
from data_prep.writer import BadRows, DataError
from stem_tfrs import make_dataset
from stem_tfrs.data.schema import Schema, SchemaError

from tests.test_main import main_py

COLUMNS = ["user_id", "item_id", "tags", "day", "click", "like", "unused"]
DAYS = ["20240101", "20240102", "20240103", "20240104"]
FEATURES = ["user_id", "item_id", "tags"]


def write_logs(path, rows, seed, columns=COLUMNS, sep=",", extra=()):
  """A header and `rows` generated lines in `columns` order; `extra`: (position, line) pairs."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(rows):
    click = int(rng.random() < 0.4)
    values = {"user_id": f"u{rng.integers(0, 30)}", "item_id": f"i{rng.integers(0, 40)}",
              "tags": "|".join(rng.choice(["a", "b", "c", "d"], rng.integers(0, 3),
                                          replace=False)),
              "day": DAYS[rng.integers(0, 4)], "click": click,
              "like": int(click and rng.random() < 0.3), "unused": "x"}
    lines.append(sep.join(str(values[c]) for c in columns))
  for position, line in extra:
    lines.insert(position, line)
  path.write_text(sep.join(columns) + "\n" + "\n".join(lines) + "\n")


def rows_per_day(paths, sep=","):
  """Good rows (a full line, 0/1 labels) per day, counted from the files themselves."""
  counts = {}
  for path in paths:
    header, *lines = path.read_text().splitlines()
    for line in lines:
      row = dict(zip(header.split(sep), line.split(sep)))
      if len(line.split(sep)) == len(header.split(sep)) and row["like"] in ("0", "1"):
        counts[row["day"]] = counts.get(row["day"], 0) + 1
  return counts


def test_a_directory_of_files_is_split_by_day(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  # Two files with their columns in other orders, a bad label, a short line, a hidden file.
  write_logs(logs / "part-0.csv", 300, seed=1, extra=[(10, "u1,i1,a,20240101,1,2,x")])
  write_logs(logs / "part-1.csv", 200, seed=2, columns=COLUMNS[::-1],
             extra=[(5, "x,1,0,20240102,b")])
  (logs / ".part-1.csv.crc").write_text("a checksum, not a log")
  bad = BadRows()
  stats = prepare_logs(str(logs), str(tmp_path / "out"), features=FEATURES,
                       tasks=["click", "like"], group_column="user_id",
                       multivalent={"tags": "|"}, split_column="day", valid_from="20240103",
                       test_from="20240104", min_count=1, bad_rows=bad)
  assert bad.counts == {"label outside {0, 1}": 1, "wrong column count": 1}
  assert bad.examples["wrong column count"][0].endswith("part-1.csv line 7: 5 fields, expected 7")
  days = rows_per_day([logs / "part-0.csv", logs / "part-1.csv"])
  assert sum(days.values()) == 500
  assert stats["train"]["rows"] == days["20240101"] + days["20240102"]
  assert stats["valid"]["rows"] == days["20240103"]
  assert stats["test"]["rows"] == days["20240104"]

  schema = Schema.load(str(tmp_path / "out"))
  assert schema.feature_names == FEATURES and schema.tasks == ["click", "like"]
  assert schema.group_column == "user_id"
  assert [f.multivalent for f in schema.features] == [False, False, True]
  assert sorted((tmp_path / "out" / "vocab" / "tags.txt").read_text().split()) == list("abcd")
  features, labels = next(iter(make_dataset(schema, "test", 1024)))
  assert features["user_id"].shape[0] == days["20240104"] and set(labels) == {"click", "like"}


def test_a_glob_of_tab_separated_files_is_split_at_random_by_seed(tmp_path):
  for part in range(3):
    write_logs(tmp_path / f"day-{part}.tsv", 400, seed=part, sep="\t")
  write_logs(tmp_path / "other.tsv", 50, seed=9, sep="\t")  # not matched by the pattern

  def run(out, seed):
    return prepare_logs(str(tmp_path / "day-*.tsv"), str(tmp_path / out), features=FEATURES,
                        tasks=["like"], sep="\t", test_fraction=0.2, valid_fraction=0.25,
                        seed=seed, min_count=2)

  stats = run("a", seed=5)
  rows = [stats[s]["rows"] for s in ("train", "valid", "test")]
  assert sum(rows) == 1200
  assert abs(rows[2] - 240) < 60 and abs(rows[1] - 240) < 60  # 20%, then 25% of the rest
  assert run("b", seed=5) == stats and run("c", seed=6) != stats
  assert Schema.load(str(tmp_path / "a")).group_column is None


def test_numbers_are_compared_as_numbers_and_a_value_that_is_not_one_is_a_bad_row(tmp_path):
  lines = ["t,uid,click"] + [f"{t},u{t % 7},{t % 2}" for t in range(95, 125)] + ["soon,u1,1"]
  (tmp_path / "logs.csv").write_text("\n".join(lines) + "\n")
  bad = BadRows()
  # As text, "95" > "110"; as numbers the bounds split 95..124 into 15, 10 and 5 rows.
  stats = prepare_logs(str(tmp_path / "logs.csv"), str(tmp_path / "out"), features=["uid"],
                       tasks=["click"], split_column="t", valid_from="110", test_from="120",
                       min_count=1, bad_rows=bad)
  assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [15, 10, 5]
  assert bad.examples["unparsable number"] == [
      f"{tmp_path / 'logs.csv'} line 32: column 't': 'soon' is not a number"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=[]), r"--tasks is required: the 0/1 label columns"),
    (dict(features=[]), r"--features is required"),
    (dict(group_column="day"), r"--group_column=day must be one of --features"),
    (dict(multivalent={"genres": "|"}), r"--multivalent names \['genres'\], which are not"),
    (dict(split_column="day"), r"takes --split_column, --valid_from and --test_from together"),
    (dict(split_column="day", valid_from="20240104", test_from="20240103"),
     r"--valid_from=20240104 is after --test_from=20240103"),
    (dict(split_column="day", valid_from="20240103", test_from="2024-01-04"),
     r"must both be numbers or both be text"),
    (dict(features=["user_id", "country"]), r"logs.csv: missing column\(s\) \['country'\]"),
    (dict(test_fraction=1.0), r"must be in \[0, 1\)"),
    (dict(split_column="day", valid_from="20240105", test_from="20240106"),
     r"the valid and test splits would be empty"),
    (dict(features=["user_id", "user_id"]), r"column\(s\) \['user_id'\] named more than once"),
    (dict(features=["user_id", "click"]), r"column\(s\) \['click'\] named more than once"),
    (dict(features=["user_id", "tags"], group_column="tags", multivalent={"tags": "|"}),
     r"group column 'tags' is multivalent: a row belongs to one group"),
    (dict(min_count=1000), r"no value of feature\(s\) \['user_id', 'item_id'\] is seen "
                           r"min_count=1000 times"),
    (dict(tasks=["click", "group"]), r"task name 'group' is reserved: evaluation keeps the group "
                                     r"ids"),
])
def test_a_bad_request_is_one_line_and_writes_nothing(tmp_path, kwargs, message):
  write_logs(tmp_path / "logs.csv", 100, seed=3)
  args = dict(dict(features=["user_id", "item_id"], tasks=["click"], min_count=1), **kwargs)
  with pytest.raises((DataError, SchemaError), match=message):
    prepare_logs(str(tmp_path / "logs.csv"), str(tmp_path / "out"), **args)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.csv"]


@pytest.mark.slow
def test_prepare_command_reads_your_logs_and_refuses_their_flags_for_other_data_sets(tmp_path):
  write_logs(tmp_path / "logs.tsv", 300, seed=4, sep="\t")
  result = main_py("prepare", "--dataset=logs", f"--raw={tmp_path / 'logs.tsv'}",
                   f"--out={tmp_path / 'out'}", "--features=user_id,item_id,tags",
                   "--tasks=click,like", "--group_column=user_id", "--multivalent=tags:|",
                   "--sep=\\t", "--split_column=day", "--valid_from=20240103",
                   "--test_from=20240104", "--min_count=1", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  days = rows_per_day([tmp_path / "logs.tsv"], sep="\t")
  assert f"test {days['20240104']:,} rows" in result.stdout
  assert Schema.load(str(tmp_path / "out")).features[2].multivalent

  other = main_py("prepare", "--dataset=tiktok", f"--raw={tmp_path / 'logs.tsv'}",
                  f"--out={tmp_path / 'tiktok'}", "--features=user_id", cwd=tmp_path)
  assert other.returncode == 2
  assert other.stderr.strip().splitlines()[-1] == (
      "error: --features applies only to --dataset=logs (your own logs); tiktok has its own "
      "columns and split")


def test_quoted_fields_spark_markers_and_a_repeated_header_column(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  lines = ['"user_id","title","click"'] + [f'"u{i % 5}","Hello, ""world"" {i % 3}","{i % 2}"'
                                           for i in range(60)]
  (logs / "part-00000.csv").write_text("\n".join(lines) + "\n")
  (logs / "_SUCCESS").write_text("")          # Spark's marker: not a log
  (logs / "._SUCCESS.crc").write_text("crc")
  prepare_logs(str(logs), str(tmp_path / "out"), features=["user_id", "title"], tasks=["click"],
               min_count=1, test_fraction=0.0, valid_fraction=0.0)
  vocab = (tmp_path / "out" / "vocab" / "title.txt").read_text().splitlines()
  assert sorted(vocab) == [f'Hello, "world" {k}' for k in range(3)]

  (tmp_path / "twice.csv").write_text("user_id,click,user_id\nu1,1,u2\n")
  with pytest.raises(DataError, match=r"twice.csv: the header names column\(s\) \['user_id'\] "
                                      r"more than once"):
    prepare_logs(str(tmp_path / "twice.csv"), str(tmp_path / "o2"), features=["user_id"],
                 tasks=["click"], min_count=1)


def test_a_list_separator_a_flag_cannot_spell_is_named_and_may_not_be_the_field_separator(
    tmp_path):
  from data_prep.logs import parse_multivalent, separator
  assert parse_multivalent(["tags:comma", "genres:|", "words:tab"]) == {
      "tags": ",", "genres": "|", "words": "\t"}
  assert separator("\\t") == "\t" and separator(";") == ";"
  lines = ["user_id\ttags\tclick"] + [f"u{i % 4}\ta,b\t{i % 2}" for i in range(40)]
  (tmp_path / "logs.tsv").write_text("\n".join(lines) + "\n")
  prepare_logs(str(tmp_path / "logs.tsv"), str(tmp_path / "out"), features=["user_id", "tags"],
               tasks=["click"], sep="\t", multivalent={"tags": ","}, min_count=1,
               test_fraction=0.0, valid_fraction=0.0)
  assert sorted((tmp_path / "out" / "vocab" / "tags.txt").read_text().split()) == ["a", "b"]
  with pytest.raises(DataError, match=r"the list separator of \['tags'\] overlaps the field "
                                      r"separator '\\t'"):
    prepare_logs(str(tmp_path / "logs.tsv"), str(tmp_path / "o2"), features=["user_id", "tags"],
                 tasks=["click"], sep="\t", multivalent={"tags": "\t"}, min_count=1)


def test_a_carriage_return_inside_a_field_is_a_bad_row_and_crlf_line_ends_are_fine(tmp_path):
  lines = ["user_id,item_id,click"] + [f"u{i % 5},i{i % 4},{i % 2}" for i in range(40)]
  lines.insert(11, "u1,i1\ru9,i9,1")  # line 12: a bare CR would split off a row "u9,i9,1"
  (tmp_path / "logs.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
  bad = BadRows()
  stats = prepare_logs(str(tmp_path / "logs.csv"), str(tmp_path / "out"),
                       features=["user_id", "item_id"], tasks=["click"], min_count=1,
                       test_fraction=0.0, valid_fraction=0.0, bad_rows=bad)
  assert stats["train"]["rows"] == 40
  assert bad.counts == {"line break inside a field": 1}
  assert bad.examples["line break inside a field"] == [f"{tmp_path / 'logs.csv'} line 12: "
                                                       "a carriage return inside the line"]
  assert "u9" not in (tmp_path / "out" / "vocab" / "user_id.txt").read_text().split()
