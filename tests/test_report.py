"""benchmarks/report.py renders docs/performance.md from the results JSON, and the page is current."""

import json
import os
import subprocess
import sys

from tests.support import REPO

REPORT = os.path.join(REPO, "benchmarks", "report.py")


def report(*args, cwd=REPO):
  return subprocess.run([sys.executable, REPORT, *args], capture_output=True, text=True,
                        cwd=cwd, timeout=120)


def rendered(results_dir, tmp_path) -> str:
  """The page report.py renders from `results_dir` (into tmp_path), as text."""
  page = tmp_path / "performance.md"
  result = report(f"--results={results_dir}", f"--output={page}")
  assert result.returncode == 0, result.stderr
  return page.read_text(encoding="utf-8")


def test_performance_page_is_what_the_generator_renders(tmp_path):
  page = tmp_path / "performance.md"
  result = report(f"--output={page}")
  assert result.returncode == 0, result.stderr
  committed = open(os.path.join(REPO, "docs", "performance.md"), encoding="utf-8").read()
  assert page.read_text(encoding="utf-8") == committed, (
      "docs/performance.md is stale: run `python benchmarks/report.py`")
  assert report("--check").returncode == 0


def test_check_fails_on_a_stale_page(tmp_path):
  page = tmp_path / "performance.md"
  page.write_text("# Performance\n\nhand-edited\n", encoding="utf-8")
  result = report(f"--output={page}", "--check")
  assert result.returncode == 1 and "stale" in result.stderr
  assert page.read_text(encoding="utf-8") == "# Performance\n\nhand-edited\n"


def test_renders_a_made_up_results_dir(tmp_path):
  results = tmp_path / "results"
  results.mkdir()
  machine = {"cpu": "Made-up CPU 9000", "cpus": 3, "memory_gib": 7.5, "isa": ["avx2"],
             "os": "Linux", "python": "3.11.7", "tensorflow": "2.21.0", "gpus": []}
  (results / "optimizer.json").write_text(json.dumps({
      "rows": 1234, "width": 48, "ids": 512, "machine": machine,
      "ms_per_update": {"keras_adam": [41.25, 40.5, 43.0], "fused_adam": [17.75, 18.0, 19.0],
                        "lazy_adam": [0.61, 0.62, 0.63]},
      "best_speedup": 2.28, "lazy_best_speedup_over_fused": 29.1}))
  (results / "something_new.json").write_text(json.dumps({"widgets_per_second": 98765,
                                                          "machine": machine}))
  page = tmp_path / "performance.md"
  result = report(f"--results={results}", f"--output={page}")
  assert result.returncode == 0, result.stderr
  text = page.read_text(encoding="utf-8")
  optimizer = text[text.index("## optimizer"):text.index("## something_new")]
  assert "python benchmarks/optimizer.py --rows 1234 --width 48 --ids 512" in optimizer
  assert "| CPU | Made-up CPU 9000 |" in optimizer and "| cores | 3 |" in optimizer
  assert "| fused_adam | 17.75, 18.00, 19.00 | 17.75 |" in optimizer
  assert "| best_speedup | 2.28x |" in optimizer
  assert "Adam update of an embedding table" in optimizer  # the script's docstring
  assert "| `widgets_per_second` | 98,765 |" in text[text.index("## something_new"):]
  assert report(f"--results={results}", f"--output={page}", "--check").returncode == 0


def test_a_results_file_in_another_layout_is_refused_in_one_line(tmp_path):
  results = tmp_path / "results"
  results.mkdir()
  (results / "optimizer.json").write_text(json.dumps({"ms_per_update": {"lazy_adam": [1.0]}}))
  page = tmp_path / "performance.md"
  result = report(f"--results={results}", f"--output={page}")
  assert result.returncode == 2 and not page.exists()
  assert len(result.stderr.strip().splitlines()) == 1 and "optimizer.json" in result.stderr
