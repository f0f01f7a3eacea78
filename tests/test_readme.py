"""The README's and docs' promises: their commands, flags, links and extras are the code's.

The notebook snippet runs as printed, CI runs the README's test command, every `main.py`
command line in README.md and docs/ names a command and flags the CLI defines, every relative
link and anchor resolves, and no speed figure is written by hand (docs/performance.md is
generated: tests/test_report.py).
"""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from tests.support import REPO

PAGES = ["README.md"] + sorted(os.path.relpath(p, REPO)
                               for p in glob.glob(os.path.join(REPO, "docs", "*.md")))


def read(page):
  return open(os.path.join(REPO, page), encoding="utf-8").read()


def readme():
  return read("README.md")


def command_lines(text):
  """Every command line of the text, continuation lines (ending in a backslash) joined."""
  text = re.sub(r"\\\n\s*", " ", text)
  return [line.strip().strip("`") for line in text.splitlines()]


def slug(heading):
  """GitHub's anchor for a Markdown heading."""
  heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return heading.replace(" ", "-")


def test_readme_is_short():
  assert len(readme().splitlines()) <= 300


@pytest.mark.slow
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
  assert all("pip install -c constraints.txt -e " in c for c in commands)
  ci = open(os.path.join(REPO, ".ci", "run")).read().strip().splitlines()[-1]
  assert ci == commands[1]


def test_fast_tier_deselects_the_slow_marker_the_suite_registers():
  assert 'python -m pytest -m "not slow" -n 2 tests' in readme()
  pyproject = open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8").read()
  assert re.search(r'markers = \[\s*"slow:', pyproject)


@pytest.mark.slow
def test_every_main_py_command_line_names_a_defined_command_and_flags():
  script = """
import json, sys
from absl import flags
import stem_tfrs.cli as cli
for command in cli.COMMANDS.values():
  flags.adopt_module_key_flags(sys.modules[command.__module__])
print(json.dumps({"commands": sorted(cli.COMMANDS), "flags": sorted(flags.FLAGS)}))
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  defined = json.loads(result.stdout.strip().splitlines()[-1])
  known = set(defined["flags"]) | {"help", "helpfull", "flagfile"}

  def is_defined(flag):
    return flag in known or flag.startswith("no") and flag[2:] in known

  unknown, seen = [], 0
  for page in PAGES:
    for line in command_lines(read(page)):
      found = re.search(r"(?:python main\.py|stem-tfrs) (\w+)(.*)", line)
      if not found or found.group(1) in ("command",):
        continue
      seen += 1
      command, rest = found.groups()
      if command not in defined["commands"]:
        unknown.append(f"{page}: command {command!r} in {line!r}")
      rest = re.sub(r"=(\"[^\"]*\"|'[^']*')", "=VALUE", rest)  # e.g. --beam_options="--x=1"
      for flag in re.findall(r"--([a-z_0-9]+)", rest.split("  #")[0]):
        if not is_defined(flag):
          unknown.append(f"{page}: flag --{flag} in {line!r}")
  for page in ("README.md", "docs/cli.md"):  # the flags their prose names
    for flag in re.findall(r"`--([a-z_0-9]+)[^`]*`", read(page)):
      if not is_defined(flag):
        unknown.append(f"{page}: flag --{flag}")
  assert seen >= 20
  assert not unknown, "\n".join(unknown)


def test_every_benchmark_and_file_the_pages_name_exists():
  missing = []
  for page in PAGES:
    for path in set(re.findall(r"\b((?:benchmarks|data_prep|stem_tfrs|tests|notebooks|docs)"
                               r"/[\w/]+\.(?:py|md|ipynb|json))", read(page))):
      if not os.path.exists(os.path.join(REPO, path)) and "*" not in path:
        missing.append(f"{page}: {path}")
  assert not missing, "\n".join(missing)


def test_every_relative_link_and_anchor_resolves():
  broken = []
  for page in PAGES:
    for target in re.findall(r"\]\(([^)\s]+)\)", read(page)):
      if re.match(r"[a-z]+:", target):
        continue
      path, _, anchor = target.partition("#")
      resolved = (os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)) if path
                  else os.path.join(REPO, page))
      if not os.path.exists(resolved):
        broken.append(f"{page}: {target}")
      elif anchor and resolved.endswith(".md"):
        headings = re.findall(r"^#+ (.*)$", open(resolved, encoding="utf-8").read(), re.M)
        if anchor not in {slug(h) for h in headings}:
          broken.append(f"{page}: {target} (no such heading)")
  assert not broken, "\n".join(broken)


def test_extras_table_lists_every_extra_the_code_names():
  source = open(os.path.join(REPO, "stem_tfrs", "extras.py"), encoding="utf-8").read()
  assignment = next(node for node in ast.parse(source).body if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "EXTRAS")
  extras = [key.value for key in assignment.value.keys]  # read, not imported: no TensorFlow
  listed = re.findall(r"^\| `(\w+)` \|", readme().split("## Optional extras")[1], re.M)
  assert listed == extras
  assert 'pip install -c constraints.txt -e ".[tune]"' in readme()


def test_no_hand_written_speed_figure():
  figure = re.compile(r"\d[\d,.]*\s*(?:examples/s|rows/s|ex/s|ms\b|GFLOP/s|MiB|x faster|"
                      r"% faster|seconds\b|s of training)")
  found = [f"{page}: {m.group(0)!r}" for page in PAGES if page != "docs/performance.md"
           for m in figure.finditer(read(page))]
  assert not found, "\n".join(found)
