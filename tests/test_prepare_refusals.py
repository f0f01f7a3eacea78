"""prepare through its command line: what --out it refuses to replace, and a write that fails.

Each case runs the command as `main.py` runs it (in the test's process, see
tests/cli_cases.py; the failed write in a process of its own, whose file size
is limited), and checks that it ends in one `error:` line and leaves the raw input, the working directory
and whatever --out named byte-identical.
"""

import hashlib
import os
import resource
import signal
import subprocess
import sys

import pytest

from tests.support import REPO
from tests.test_logs import write_logs
from tests.cli_cases import run_here
from tests.test_main import assert_clean_error
from tests.test_movielens import write_original

LOGS_FLAGS = ["--features=user_id,item_id", "--tasks=click,like", "--min_count=1"]


def prepare_logs(*args, cwd, preexec_fn=None):
  """`python main.py prepare --dataset=logs ARGS` in `cwd`, in this process; with `preexec_fn`,
  `python -m data_prep.logs ARGS` in a process of its own that runs `preexec_fn` first."""
  if preexec_fn is None:
    return run_here("prepare", "--dataset=logs", *args, *LOGS_FLAGS, cwd=cwd)
  env = dict(os.environ, PYTHONPATH=REPO, PYTHONDONTWRITEBYTECODE="1")
  return subprocess.run([sys.executable, "-m", "data_prep.logs", *args, *LOGS_FLAGS],
                        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
                        preexec_fn=preexec_fn)


def snapshot(path):
  """Every file under `path` (or `path` itself) -> the digest of its bytes."""
  if os.path.isfile(path):
    return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
  found = {}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(root, name)
      found[os.path.relpath(full, path)] = (
          hashlib.sha256(open(full, "rb").read()).hexdigest() if os.path.isfile(full) else "dir")
  return found


def raw_logs(directory):
  directory.mkdir(parents=True, exist_ok=True)
  write_logs(directory / "logs.csv", 200, seed=1)
  return directory / "logs.csv"


def test_overwrite_refuses_the_directory_holding_the_raw_file(tmp_path):
  raw = raw_logs(tmp_path / "raw")
  before = snapshot(tmp_path)
  result = prepare_logs(f"--raw={raw}", f"--out={tmp_path / 'raw'}", "--overwrite",
                        cwd=tmp_path)
  assert_clean_error(result, rf"--out {tmp_path / 'raw'}: .*holds the raw input {raw}")
  assert snapshot(tmp_path) == before


def test_overwrite_refuses_the_working_directory(tmp_path):
  raw = raw_logs(tmp_path / "raw")
  work = tmp_path / "work"
  work.mkdir()
  (work / "notes.txt").write_text("mine\n")
  before = snapshot(tmp_path)
  result = prepare_logs(f"--raw={raw}", "--out=.", "--overwrite", cwd=work)
  assert_clean_error(result, rf"--out {work}: .*the working directory")
  assert snapshot(tmp_path) == before


def test_overwrite_refuses_an_ancestor_of_the_raw_file(tmp_path):
  raw = raw_logs(tmp_path / "a" / "b" / "c")
  (tmp_path / "elsewhere").mkdir()
  before = snapshot(tmp_path)
  result = prepare_logs(f"--raw={raw}", f"--out={tmp_path / 'a'}", "--overwrite",
                        cwd=tmp_path / "elsewhere")
  assert_clean_error(result, rf"--out {tmp_path / 'a'}: .*holds the raw input {raw}")
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_regular_file_as_out_is_refused_before_any_input_is_read(tmp_path, overwrite):
  (tmp_path / "results.txt").write_text("a file of mine\n")
  before = snapshot(tmp_path)
  # --raw does not exist: the refusal comes first, before any input is read.
  result = run_here("prepare", "--dataset=movielens", "--raw=ml-missing", "--out=results.txt",
                    *(["--overwrite"] if overwrite else []), cwd=tmp_path)
  assert_clean_error(result, rf"--out {tmp_path / 'results.txt'}: .*is a file, not a directory")
  assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_directory_that_is_not_a_prepared_data_set(tmp_path):
  raw = raw_logs(tmp_path / "raw")
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "schema.json").write_text('{"my": "own schema"}\n')  # not ours
  (mine / "thesis.tex").write_text("months of work\n")
  before = snapshot(tmp_path)
  result = prepare_logs(f"--raw={raw}", f"--out={mine}", "--overwrite", cwd=tmp_path)
  assert_clean_error(result, rf"--out {mine}: .*not a prepared data set")
  assert snapshot(tmp_path) == before


def test_overwrite_refuses_the_raw_directory_of_movielens(tmp_path):
  (tmp_path / "ml").mkdir()
  write_original(tmp_path / "ml")
  before = snapshot(tmp_path)
  result = run_here("prepare", "--dataset=movielens", "--raw=ml", "--out=ml", "--overwrite",
                    cwd=tmp_path)
  assert_clean_error(result, rf"--out {tmp_path / 'ml'}: is the raw input ml,")
  assert snapshot(tmp_path) == before


def limit_file_size(size):
  """For a child process: writes past `size` bytes fail with EFBIG, as on a full disk."""
  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
  return limit


@pytest.mark.slow
@pytest.mark.parametrize("size", [100, 1000])  # fails in a vocabulary; in a shard
def test_a_failed_write_is_one_line_naming_the_output_and_leaves_nothing(tmp_path, size):
  raw = tmp_path / "logs.csv"
  write_logs(raw, 2000, seed=2)
  result = prepare_logs(f"--raw={raw}", "--out=out", cwd=tmp_path,
                        preexec_fn=limit_file_size(size))
  assert_clean_error(result, rf"cannot write {tmp_path / 'out'}: .*File too large")
  assert sorted(os.listdir(tmp_path)) == ["logs.csv"]
