"""stem_tfrs.evaluation.results_page: the page and its plots, from a tiny benchmark's JSON."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from tests.support import REPO, tiny_model_config


@pytest.fixture(scope="module")
def tiny_benchmark(tiny_data, tmp_path_factory):
  """results.json of stem and mmoe, two seeds each, one epoch, on data named as a slice."""
  from stem_tfrs import TrainConfig
  from stem_tfrs.training import comparison
  root = tmp_path_factory.mktemp("page")
  data = root / "tiny_slice"
  shutil.copytree(tiny_data, data)
  train_config = TrainConfig(data_dir=str(data), batch_size=512, epochs=1, seed=11)
  bench = comparison.BenchmarkConfig(models=("stem", "mmoe"), seeds=2,
                                     output_dir=str(root / "bench"), replicates=50)
  settings = {"mmoe": (tiny_model_config(), dataclasses.replace(train_config,
                                                                learning_rate=1e-4))}
  comparison.run_benchmark(tiny_model_config(), train_config, bench, settings=settings)
  return root / "bench" / "results.json"


def _page(json_path, output, *extra):
  return subprocess.run([sys.executable, "-m", "stem_tfrs.evaluation.results_page",
                         f"--benchmark_json={json_path}", f"--output={output}", *extra],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_page_is_generated_from_the_benchmark_json(tiny_benchmark, tmp_path):
  output = tmp_path / "docs" / "results.md"
  about = tmp_path / "about.md"
  about.write_text("Why this study ran at learning rate 1e-3.\n")
  result = _page(tiny_benchmark, output, f"--about={about}")
  assert result.returncode == 0, result.stderr[-3000:]
  page = output.read_text()
  assert f"## About this study\n\nFrom `{about}`.\n\nWhy this study ran at learning rate 1e-3.\n" in page
  assert page.count(f"--about={about}") == 2  # in the header and in the commands to reproduce
  report = json.loads(tiny_benchmark.read_text())
  for row in report["results"]:  # every model and task, with its seed std
    assert f"| {row['model']} | {row['task']} | 2 | {row['auc_mean']:.4f} ± " in page
  every_row = [r for r in report["intervals"] if r["group"] == "all" and r["metric"] == "auc"]
  assert len(every_row) == 2
  for r in every_row:
    assert (f"| stem - mmoe | {r['task']} | auc | 2 | {r['diff_mean']:+.4f} | "
            f"[{r['seed_low']:+.4f}, {r['seed_high']:+.4f}] | "
            f"[{r['boot_low']:+.4f}, {r['boot_high']:+.4f}] | {r['verdict']} |") in page
  assert "## Comparable samples" in page and "| comparable | finish | stem |" in page
  assert "come from a slice of the data set (`tiny_slice`)" in page
  assert "--benchmark_json=" in page and "python main.py benchmark" in page
  assert "| mmoe | 0.0001 |" in page and "| stem | 0.001 |" in page  # each model's settings
  for plot in ("auc", "differences", "comparable", "gates"):
    assert f"(results_{plot}.png)" in page
    assert (output.parent / f"results_{plot}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_one_seed_has_no_seed_interval_on_the_page(tiny_benchmark, tmp_path):
  report = json.loads(tiny_benchmark.read_text())
  report["runs"] = [r for r in report["runs"] if r["seed"] == 11]
  for row in report["results"]:
    row.update(seeds=1, auc_std=None, gauc_std=None, logloss_std=None)  # NaN, as JSON has it
  for row in report["intervals"]:
    row.update(seeds=1, seed_low=None, seed_high=None)
  for row in report["comparable"]:
    row.update(auc_std=None)
  one_seed = tmp_path / "one_seed.json"
  one_seed.write_text(json.dumps(report))
  result = _page(one_seed, tmp_path / "results.md")
  assert result.returncode == 0, result.stderr[-3000:]
  page = (tmp_path / "results.md").read_text()
  row = next(r for r in report["intervals"] if r["group"] == "all" and r["metric"] == "auc")
  assert (f"| stem - mmoe | {row['task']} | auc | 1 | {row['diff_mean']:+.4f} | - | "
          f"[{row['boot_low']:+.4f}, {row['boot_high']:+.4f}] |") in page


@pytest.mark.slow
def test_a_file_that_is_not_a_benchmark_json_is_refused(tiny_benchmark, tmp_path):
  old = tmp_path / "old.json"
  old.write_text(json.dumps({"results": [], "runs": [], "failed": []}))
  output = tmp_path / "results.md"
  result = _page(old, output)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {old} is not the results.json of a benchmark of this version "
      "(no benchmark, data, intervals); run python main.py benchmark again")
  assert not output.exists()
  missing = _page(tmp_path / "none.json", output)
  assert missing.returncode == 1 and "No such file" in missing.stderr.splitlines()[-1]
  no_about = _page(tiny_benchmark, output, f"--about={tmp_path / 'none.md'}")
  assert no_about.returncode == 1 and "none.md" in no_about.stderr.splitlines()[-1]
  assert not output.exists()
