"""The README's promises: the notebook snippet runs as printed, and CI runs the README's test command."""

import os
import re
import subprocess
import sys

from tests.support import REPO


def readme():
  return open(os.path.join(REPO, "README.md"), encoding="utf-8").read()


def test_library_api_snippet_runs_as_printed(tmp_path):
  snippet = re.search(r"## In a notebook.*?```python\n(.*?)```", readme(), re.S).group(1)
  assert len(snippet.strip().splitlines()) <= 12
  env = dict(os.environ, PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout.strip().splitlines()
  assert "'test'" not in printed[-2] and "'finish'" in printed[-2] and "'gauc'" in printed[-2]
  export = printed[-1]
  assert re.fullmatch(r"saved_models/stem/\d+", export)
  assert os.path.isfile(tmp_path / export / "saved_model.pb")


def test_ci_runs_the_readme_test_command():
  commands = re.findall(r"^    (python3 -m venv .*)$", readme(), re.M)
  assert len(commands) == 2 and commands[0].endswith("python main.py train")
  ci = open(os.path.join(REPO, ".ci", "run")).read().strip().splitlines()[-1]
  assert ci == commands[1]
