"""`python main.py predict` and serving.batch.score_csv: bad rows, bad input, wrong servers, temporaries."""

import csv
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from stem_tfrs.serving.batch import score_csv

from tests.standin_servers import Model, grpc_server, rest_server
from tests.test_export import raw_batch
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error

SPECS = {"uid": (1, "string"), "tags": (2, "int64")}


def scored(features):
  return {"like": np.full(len(features["uid"]), 0.5, np.float32)}


def dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_predict_removes_temporaries_of_dead_runs_and_keeps_live_ones(tmp_path):
  (tmp_path / "rows.csv").write_text("uid,tags\na,1|2\nb,3\n")
  host = socket.gethostname()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    dead = tmp_path / f"out.csv.tmp-{host}-{dead_pid()}-csv"
    alive = tmp_path / f"out.csv.tmp-{host}-{live.pid}-csv"
    other = tmp_path / f"other.csv.tmp-{host}-{dead_pid()}-csv"  # another output's
    for path in (dead, alive, other):
      path.write_text("half written\n")
    assert score_csv(str(tmp_path / "rows.csv"), str(tmp_path / "out.csv"), scored, SPECS) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["rows.csv", "out.csv", alive.name, other.name])
  finally:
    live.kill()
    live.wait()


def test_rows_with_too_few_or_too_many_fields_are_counted_and_not_scored(tmp_path):
  from data_prep.writer import BadRows, DataError
  (tmp_path / "rows.csv").write_text("uid,tags,request_id\na,1,r1\nb,2\nc,3,r3\nd,4,r4,x\n")
  bad_rows = BadRows()
  assert score_csv(str(tmp_path / "rows.csv"), str(tmp_path / "out.csv"), scored, SPECS,
                   keep_columns=["request_id"], batch_size=2, bad_rows=bad_rows) == 2
  with open(tmp_path / "out.csv") as f:
    assert [row["request_id"] for row in csv.DictReader(f)] == ["r1", "r3"]
  assert bad_rows.total == 2
  assert re.search(rf"skipped 2 bad row\(s\):\n  wrong column count: 2 \(first: "
                   rf"{re.escape(str(tmp_path / 'rows.csv'))} line 3: 2 fields, expected 3\)",
                   bad_rows.summary()), bad_rows.summary()
  with pytest.raises(DataError, match=r"rows.csv line 3: 2 fields, expected 3"):
    score_csv(str(tmp_path / "rows.csv"), str(tmp_path / "strict.csv"), scored, SPECS,
              bad_rows=BadRows(strict=True))
  assert not (tmp_path / "strict.csv").exists()


def write_rows(path, schema, n=6, extra=None):
  """A CSV of `n` raw rows of `schema`'s inputs, plus the columns of `extra` (name -> values)."""
  batch = raw_batch(schema, n=n)
  batch.update(extra or {})
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(list(batch))
    for i in range(n):
      writer.writerow([batch[name][i] for name in batch])
  return list(batch)


@pytest.mark.slow
def test_predict_command_reports_bad_rows_at_the_end_and_strict_stops_at_the_first(
    trained_run, tmp_path):
  write_rows(tmp_path / "rows.csv", trained_run.model.schema)
  lines = (tmp_path / "rows.csv").read_text().splitlines()
  lines[2] = lines[2].rsplit(",", 1)[0]    # line 3: a field short
  lines[4] = lines[4] + ",extra"           # line 5: a field too many
  (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
  result = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=rows.csv",
                    "--output=scores.csv", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "scores.csv") as f:
    assert len(list(csv.DictReader(f))) == 4
  assert "scored 4 rows" in result.stdout
  assert re.search(r"skipped 2 bad row\(s\):\n  wrong column count: 2 \(first: rows.csv line 3: "
                   r"\d+ fields, expected \d+\)", result.stderr), result.stderr[-3000:]

  strict = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=rows.csv",
                    "--output=strict.csv", "--strict", cwd=tmp_path)
  assert_clean_error(strict, r"wrong column count: rows.csv line 3: \d+ fields, expected \d+")
  assert not (tmp_path / "strict.csv").exists()


def test_predict_command_refuses_keep_columns_naming_a_task(trained_run, tmp_path):
  write_rows(tmp_path / "rows.csv", trained_run.model.schema, extra={"like": ["1"] * 6})
  result = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=rows.csv",
                    "--output=scores.csv", "--keep_columns=like", cwd=tmp_path)
  assert_clean_error(result, r"--keep_columns names \['like'\], a task the model predicts")
  assert not (tmp_path / "scores.csv").exists()


def test_predict_command_names_the_file_and_line_of_a_non_utf8_byte(trained_run, tmp_path):
  write_rows(tmp_path / "rows.csv", trained_run.model.schema)
  data = (tmp_path / "rows.csv").read_bytes().split(b"\n")
  data[3] = b"\xff" + data[3]
  (tmp_path / "rows.csv").write_bytes(b"\n".join(data))
  result = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=rows.csv",
                    "--output=scores.csv", cwd=tmp_path)
  assert_clean_error(result, r"rows.csv line 4: not utf-8 text")
  assert not (tmp_path / "scores.csv").exists()


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(trained_run):
  return Model(trained_run.export_path, "stem")


@pytest.mark.parametrize("protocol, listening, message", [
    ("rest", "grpc", r"did not answer as a REST \(HTTP/1\.1\) server.*--protocol=grpc"),
    ("grpc", "rest", r"did not answer as a gRPC server.*--protocol=rest"),
    ("rest", None, r"nothing answers there \(connection refused\)"),
    ("grpc", None, r"nothing answers there"),
])
def test_predict_command_at_the_wrong_port_or_no_server_says_so_in_one_line(
    trained_run, served, tmp_path, protocol, listening, message):
  write_rows(tmp_path / "rows.csv", trained_run.model.schema)
  schema = f"{trained_run.export_path}/assets.extra/schema.json"

  def predict(address):
    return run_here("predict", f"--server={address}", f"--protocol={protocol}",
                    f"--schema={schema}", "--input=rows.csv", "--output=scores.csv", cwd=tmp_path)

  if listening is None:
    address = f"127.0.0.1:{free_port()}"
    result = predict(address)
  else:
    with (grpc_server if listening == "grpc" else rest_server)(served) as address:
      result = predict(address)
  assert_clean_error(result, rf"--server={re.escape(address)} \(--protocol={protocol}\): "
                             rf"{message}")
  assert not (tmp_path / "scores.csv").exists()


def test_predict_command_refuses_to_write_over_its_input(trained_run, tmp_path):
  write_rows(tmp_path / "rows.csv", trained_run.model.schema)
  before = (tmp_path / "rows.csv").read_text()
  result = run_here("predict", f"--saved_model={trained_run.export_path}", "--input=rows.csv",
                    "--output=./rows.csv", cwd=tmp_path)
  assert_clean_error(result, r"--output=./rows.csv is the --input file")
  assert (tmp_path / "rows.csv").read_text() == before
