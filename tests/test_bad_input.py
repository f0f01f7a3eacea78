"""The bad-input corpus: malformed raw files, data sets, run directories, exports, CSVs to score,
flag values and servers that are not what a command expects.

Every case must end the same way: a non-zero exit, a last stderr line `error: ...`
that names what is wrong and where (the pattern of each case), no traceback, and
nothing written, removed or rewritten in the directory the command ran in, which
holds every input of every case. The cases run in one process (tests/cli_cases.py).
"""

import contextlib
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from tests.support import REPO, TINY_MODEL_FLAGS
from tests.test_export import raw_batch
from tests.test_logs import write_logs

pytestmark = pytest.mark.slow  # whole runs, clusters or subprocess drills: not in the fast tier

LOGS = ["prepare", "--dataset=logs", "--features=user_id,item_id", "--tasks=click,like",
        "--min_count=1"]
TRAIN = ["train", "--export_dir=", "--epochs=1", "--batch_size=512", "--verbose=0",
         *TINY_MODEL_FLAGS]
#: A gRPC server's first bytes: an HTTP/2 SETTINGS frame, what a REST client meets at port 8500.
HTTP2_SETTINGS = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64"

# (case id, argv, pattern the last line must match after "error: "), with these names in the
# corpus directory: logs.csv (good raw logs), data/ (a prepared data set), run/ (a finished
# run), export/stem/1 (its SavedModel), rows.csv (raw features to score), a_file; {port}: a
# gRPC-speaking port; {outside}: a directory beside the corpus.
CASES = [
    # Raw files.
    ("raw file missing", [*LOGS, "--raw=nope.csv", "--out=o"], r"nope\.csv does not exist"),
    ("raw file empty", [*LOGS, "--raw=empty.csv", "--out=o"], r"empty\.csv is empty"),
    ("raw file header only", [*LOGS, "--raw=header.csv", "--out=o"], r"no usable rows"),
    ("raw file a directory", [*LOGS, "--raw=data", "--out=o"], r"data"),
    ("raw file not UTF-8", [*LOGS, "--raw=latin1.csv", "--out=o"],
     r"latin1\.csv line 3.*not utf-8"),
    ("raw label not 0/1, strict", [*LOGS, "--raw=label2.csv", "--out=o", "--strict"],
     r"label2\.csv line 4.*'like'.*'2' is not 0 or 1"),
    ("raw row with too few fields, strict", [*LOGS, "--raw=short.csv", "--out=o", "--strict"],
     r"short\.csv line 3"),
    ("raw column missing", [*LOGS[:2], "--features=user_id,nope", *LOGS[3:], "--raw=logs.csv",
                            "--out=o"], r"nope"),
    ("raw column named twice", [*LOGS[:2], "--features=user_id,user_id", *LOGS[3:],
                                "--raw=logs.csv", "--out=o"], r"user_id"),
    ("raw task that is not 0/1 everywhere, strict",
     [*LOGS[:3], "--tasks=click,day", "--raw=logs.csv", "--out=o", "--strict"],
     r"logs\.csv line \d.*'day'"),
    ("raw gzip of another layout", ["prepare", "--dataset=tiktok", "--raw=logs.csv.gz",
                                    "--out=o"], r"logs\.csv\.gz line 1: 1 fields, expected 12"),
    ("raw gzip truncated", [*LOGS, "--raw=cut.csv.gz", "--out=o"],
     r"cut\.csv\.gz: damaged gzip data"),
    ("raw of another layout", ["prepare", "--dataset=tiktok", "--raw=logs.csv", "--out=o"],
     r"logs\.csv"),
    ("--min_count=0", [*LOGS, "--raw=logs.csv", "--out=o", "--min_count=0"], r"min_count"),
    ("--rows_per_record=0", [*LOGS, "--raw=logs.csv", "--out=o", "--rows_per_record=0"],
     r"rows_per_record"),
    ("--sep that is not the file's", [*LOGS, "--raw=logs.csv", "--out=o", "--sep=;"],
     r"logs\.csv: missing column.*is the separator right"),
    # Where prepare would write.
    ("--out is the raw file", [*LOGS, "--raw=logs.csv", "--out=logs.csv", "--overwrite"],
     r"--out"),
    ("--out is the directory of the raw file",
     [*LOGS, "--raw=logs.csv", "--out=.", "--overwrite"], r"--out"),
    ("--out is a directory that is not a data set",
     [*LOGS, "--raw=logs.csv", "--out=run", "--overwrite"], r"--out"),
    ("--out exists, without --overwrite", [*LOGS, "--raw=logs.csv", "--out=data"],
     r"data.*already exists"),
    # Prepared data sets.
    ("data dir missing", [*TRAIN, "--data_dir=nope", "--run_dir=r"], r"nope"),
    ("schema.json not JSON", [*TRAIN, "--data_dir=data_garbage", "--run_dir=r"],
     r"data_garbage"),
    ("schema.json path outside the data set", [*TRAIN, "--data_dir=data_escape", "--run_dir=r"],
     r"data_escape.*outside"),
    ("a shard truncated", [*TRAIN, "--data_dir=data_truncated", "--run_dir=r"],
     r"data_truncated/train-\d+-of-\d+\.tfrecord"),
    # Training flags.
    ("--batch_size=0", [*TRAIN, "--data_dir=data", "--run_dir=r", "--batch_size=0"],
     r"--batch_size"),
    ("--learning_rate=-1", [*TRAIN, "--data_dir=data", "--run_dir=r", "--learning_rate=-1"],
     r"--learning_rate"),
    ("--seed=-1", [*TRAIN, "--data_dir=data", "--run_dir=r", "--seed=-1"], r"--seed"),
    ("--loss_weights not numbers", [*TRAIN, "--data_dir=data", "--run_dir=r",
                                    "--loss_weights=a,b"], r"--loss_weights"),
    ("--expert_hidden_units not integers", [*TRAIN, "--data_dir=data", "--run_dir=r",
                                            "--expert_hidden_units=x"], r"--expert_hidden_units"),
    ("--model unknown", [*TRAIN, "--data_dir=data", "--run_dir=r", "--model=nope"], r"model"),
    ("--flagfile missing", [*TRAIN, "--data_dir=data", "--flagfile=nope.flags"], r"nope\.flags"),
    ("--export_dir is a file", [*TRAIN, "--data_dir=data", "--run_dir=r",
                                "--export_dir=a_file"], r"a_file"),
    ("--run_dir is a file", [*TRAIN, "--data_dir=data", "--run_dir=a_file"], r"a_file"),
    ("--run_dir holds a run of another model",
     [*TRAIN, "--data_dir=data", "--run_dir=run", "--model=mmoe"], r"run"),
    # Run directories and exports.
    ("--version beyond int64", ["export", "--run_dir=run", "--export_dir=export",
                                "--version=99999999999999999999"], r"--version"),
    ("--version=0", ["export", "--run_dir=run", "--export_dir=export", "--version=0"],
     r"--version"),
    ("--version taken", ["export", "--run_dir=run", "--export_dir=export", "--version=1"],
     r"version 1 already exists"),
    ("run dir missing", ["export", "--run_dir=nope", "--export_dir=export"], r"nope"),
    ("checkpoint data truncated", ["export", "--run_dir=run_truncated_data",
                                   "--export_dir=export"],
     r"run_truncated_data/checkpoints/best"),
    ("checkpoint index truncated", ["export", "--run_dir=run_truncated_index",
                                    "--export_dir=export"],
     r"run_truncated_index/checkpoints/best"),
    ("config of another model than the checkpoint", ["export", "--run_dir=run_other_model",
                                                     "--export_dir=export"],
     r"run_other_model/checkpoints/best"),
    # Scoring.
    ("predict input missing", ["predict", "--saved_model=export/stem/1", "--input=nope.csv",
                               "--output=s.csv"], r"nope\.csv"),
    ("predict input not UTF-8", ["predict", "--saved_model=export/stem/1",
                                 "--input=rows_latin1.csv", "--output=s.csv"],
     r"rows_latin1\.csv line 3"),
    ("predict row with too few fields, strict", ["predict", "--saved_model=export/stem/1",
                                                 "--input=rows_short.csv", "--output=s.csv",
                                                 "--strict"], r"rows_short\.csv line 3"),
    ("predict keeps a column named as a task", ["predict", "--saved_model=export/stem/1",
                                                "--input=rows_with_task.csv", "--output=s.csv",
                                                "--keep_columns=like"], r"like"),
    ("predict output is the input", ["predict", "--saved_model=export/stem/1",
                                     "--input=rows.csv", "--output=rows.csv"], r"--output"),
    ("predict output in a missing directory", ["predict", "--saved_model=export/stem/1",
                                               "--input=rows.csv", "--output=nope/s.csv"],
     r"nope"),
    ("predict SavedModel missing", ["predict", "--saved_model=nope", "--input=rows.csv",
                                    "--output=s.csv"], r"nope"),
    ("predict REST at a gRPC port", ["predict", "--server=127.0.0.1:{port}", "--protocol=rest",
                                     "--schema=export/stem/1/assets.extra/schema.json",
                                     "--input=rows.csv", "--output=s.csv"], r"127\.0\.0\.1:\d+"),
    ("predict at a closed port", ["predict", "--server=127.0.0.1:1", "--protocol=grpc",
                                  "--schema=export/stem/1/assets.extra/schema.json",
                                  "--input=rows.csv", "--output=s.csv"], r"127\.0\.0\.1:1"),
    # Cluster servers.
    ("server without TF_CONFIG", ["server"], r"TF_CONFIG"),
    ("server without acknowledging what it exposes",
     ["server", "--env:TF_CONFIG={\"cluster\": {\"chief\": [\"127.0.0.1:1\"], \"worker\": "
      "[\"127.0.0.1:{port}\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}"],
     r"listen_on_all_interfaces"),
    ("multi-worker train without acknowledging what it exposes",
     [*TRAIN, "--data_dir=data", "--run_dir=mw", "--strategy=multi_worker",
      "--env:TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:{port}\"]}, \"task\": "
      "{\"type\": \"worker\", \"index\": 0}}"],
     r"listen_on_all_interfaces is not set: TensorFlow's gRPC server listens on 0\.0\.0\.0"),
    ("parameter-server chief without acknowledging what it exposes",
     [*TRAIN, "--data_dir=data", "--run_dir=ps", "--strategy=parameter_server",
      "--env:TF_CONFIG={\"cluster\": {\"chief\": [\"127.0.0.1:{port}\"], \"worker\": "
      "[\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"chief\", "
      "\"index\": 0}}"],
     r"listen_on_all_interfaces is not set"),
    # Commands.
    ("no command", [], r"give a command"),
]


@contextlib.contextmanager
def http2_port():
  """A loopback port that answers every connection as a gRPC server does: binary HTTP/2."""
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  server.settimeout(0.2)
  stop = threading.Event()

  def serve():
    while not stop.is_set():
      try:
        connection, _ = server.accept()
      except OSError:
        continue
      with connection:
        connection.sendall(HTTP2_SETTINGS)
        connection.recv(65536)

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  try:
    yield server.getsockname()[1]
  finally:
    stop.set()
    thread.join()
    server.close()


def truncate(path, fraction=0.5):
  with open(path, "r+b") as f:
    f.truncate(int(os.path.getsize(path) * fraction))


def build_corpus(root, tiny_data, trained_run):
  """Every input of CASES, under `root`."""
  write_logs(root / "logs.csv", 200, seed=1)
  lines = (root / "logs.csv").read_text().splitlines(keepends=True)
  (root / "empty.csv").write_text("")
  (root / "header.csv").write_text(lines[0])
  (root / "latin1.csv").write_bytes("".join(lines[:2]).encode() + "caf\u00e9,".encode("latin-1")
                                    + "".join(lines[3:6]).encode())
  (root / "label2.csv").write_text("".join(lines[:3]) + lines[3].replace(",0,x", ",2,x")
                                   .replace(",1,x", ",2,x") + "".join(lines[4:]))
  (root / "short.csv").write_text("".join(lines[:2]) + "u1,i1\n" + "".join(lines[3:]))
  with gzip.open(root / "logs.csv.gz", "wb") as f:
    f.write("".join(lines).encode())
  (root / "cut.csv.gz").write_bytes((root / "logs.csv.gz").read_bytes()[:-200])
  (root / "a_file").write_text("not a directory\n")

  shutil.copytree(tiny_data, root / "data")
  shutil.copytree(tiny_data, root / "data_garbage")
  (root / "data_garbage" / "schema.json").write_text("{not json")
  shutil.copytree(tiny_data, root / "data_escape")
  (root / "outside.txt").write_text("secret\n")
  schema = json.loads((root / "data_escape" / "schema.json").read_text())
  schema["features"][0]["vocabulary_file"] = "../outside.txt"
  (root / "data_escape" / "schema.json").write_text(json.dumps(schema))
  shutil.copytree(tiny_data, root / "data_truncated")
  truncate(root / "data_truncated" / "train-00003-of-00008.tfrecord")

  shutil.copytree(trained_run.run_dir, root / "run")
  for name, damaged in (("run_truncated_data", "best.data-00000-of-00001"),
                        ("run_truncated_index", "best.index")):
    shutil.copytree(trained_run.run_dir, root / name)
    truncate(root / name / "checkpoints" / damaged)
  shutil.copytree(trained_run.run_dir, root / "run_other_model")
  config = json.loads((root / "run_other_model" / "config.json").read_text())
  config["model"] = "mmoe"
  (root / "run_other_model" / "config.json").write_text(json.dumps(config))
  shutil.copytree(trained_run.export_path, root / "export" / "stem" / "1")

  import pandas as pd
  rows = pd.DataFrame(raw_batch(trained_run.model.schema, n=20))
  rows.to_csv(root / "rows.csv", index=False)
  text = (root / "rows.csv").read_text().splitlines(keepends=True)
  (root / "rows_latin1.csv").write_bytes("".join(text[:2]).encode() + b"\xe9"
                                         + "".join(text[2:]).encode())
  (root / "rows_short.csv").write_text("".join(text[:2]) + "a,b\n" + "".join(text[3:]))
  rows.assign(like=1).to_csv(root / "rows_with_task.csv", index=False)


@pytest.fixture(scope="module")
def results(tiny_data, trained_run, tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  build_corpus(root, tiny_data, trained_run)
  with http2_port() as port:
    cases = []
    for name, argv, _ in CASES:
      # Each run directory its own: a case that wrongly wrote one must not change the next.
      argv = [f"--run_dir=r{len(cases)}" if a == "--run_dir=r" else a.replace("{port}", str(port))
              for a in argv]
      env = dict(a[len("--env:"):].split("=", 1) for a in argv if a.startswith("--env:"))
      cases.append({"id": name, "cwd": str(root), "env": env,
                    "argv": [a for a in argv if not a.startswith("--env:")]})
    (root.parent / "cases.json").write_text(json.dumps(cases))
    driver = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "cli_cases.py"),
         str(root.parent / "cases.json"), str(root.parent / "results.json")],
        capture_output=True, text=True, timeout=600)
  assert driver.returncode == 0, driver.stderr[-3000:]
  return {r["id"]: r for r in json.loads((root.parent / "results.json").read_text())}


@pytest.mark.parametrize("name, pattern", [(name, pattern) for name, _, pattern in CASES],
                         ids=[name for name, _, _ in CASES])
def test_bad_input_is_one_line_naming_it_and_writes_nothing(results, name, pattern):
  result = results[name]
  where = f"{name}: exit {result['code']}\n{result['stderr'][-3000:]}"
  assert result["code"] != 0, where
  assert "Traceback" not in result["stderr"], where
  last = result["stderr"].strip().splitlines()[-1] if result["stderr"].strip() else ""
  assert last.startswith("error: "), where
  assert re.search(pattern, last), where
  assert result["changed"] == [], f"{name}: {result['changed']}"
