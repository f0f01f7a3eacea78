"""A results page (markdown and PNG plots) generated from a benchmark's results.json.

    python -m stem_tfrs.evaluation.results_page \
        --benchmark_json=benchmark/kuairand_pure/results.json --output=docs/results.md

writes `docs/results.md` and, beside it, `results_auc.png`,
`results_differences.png`, `results_comparable.png` and `results_gates.png`
(prefixed with the page's name): per model and task the mean test AUC and
gAUC with their seed std; the reference model (STEM) against each baseline
with the paired seed and bootstrap intervals and a verdict
(`stem_tfrs.evaluation.intervals`); the comparable-sample analysis; the gate
shares; each model's settings; and the commands that reproduce the page.
Nothing on the page is typed by hand: edit this module, not the page. With
`--about=FILE`, the page also carries FILE's markdown, as it is, under "About
this study" (what a study changed from the authors' configuration, and why):
prose kept in the repository beside the experiment, not figures.

The plotting helpers here also draw the benchmark's own plots
(`stem_tfrs.training.comparison`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import ModuleType
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from stem_tfrs import extras
from stem_tfrs.errors import MissingExtraError
from stem_tfrs.evaluation import intervals

PAGE_COMMAND = "python -m stem_tfrs.evaluation.results_page"


def plotting(purpose: str) -> ModuleType:
  """matplotlib's pyplot on the file-only Agg backend; MissingExtraError names the extra."""
  matplotlib = extras.need("matplotlib", "plot", purpose)
  matplotlib.use("Agg")
  return extras.need("matplotlib.pyplot", "plot", purpose)


def bar_chart(plt: ModuleType, path: str, frame: pd.DataFrame, value: str, error: Optional[str],
              title: str, ylabel: str) -> None:
  """Grouped bars of `frame[value]` by its "x" column, one colour per "series"."""
  groups = list(dict.fromkeys(frame["x"]))
  series = list(dict.fromkeys(frame["series"]))
  width = 0.8 / max(len(series), 1)
  bars = len(groups) * max(len(series), 1)
  fig, ax = plt.subplots(figsize=(min(16, max(7, 0.18 * bars + 3)), 4.5))
  for i, name in enumerate(series):
    part = frame[frame["series"] == name].set_index("x").reindex(groups)
    positions = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
    ax.bar(positions, part[value], width,
           yerr=part[error] if error else None, capsize=2, label=str(name))
  ax.set_xticks(np.arange(len(groups)))
  ax.set_xticklabels(groups, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize="small", ncol=2 if len(series) > 5 else 1)
  values = frame[value].to_numpy(dtype=float)
  spread = frame[error].fillna(0.0).to_numpy(dtype=float) if error else 0.0
  low, high = values - spread, values + spread
  shown = np.isfinite(low) & np.isfinite(high)
  if value.startswith("auc") and shown.any() and low[shown].min() > 0:
    # AUCs differ in the second decimal: a zoomed axis, with every error bar inside it.
    ax.set_ylim(max(0.0, low[shown].min() - 0.05), min(1.0, high[shown].max() + 0.03))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def comparable_chart(plt: ModuleType, path: str, comparable: pd.DataFrame) -> None:
  """AUC gap to single_task by sample group (or each model's AUC, without single_task)."""
  kappa = comparable["kappa"].iloc[0]
  chart = comparable[comparable["model"] != "single_task"].copy()
  if (comparable["model"] == "single_task").any() and not chart.empty:
    value, error, title, ylabel = ("auc_vs_single_task", None,
                                   "Test AUC minus single_task's, by sample group",
                                   "AUC gap (negative = negative transfer)")
  else:  # no gap to show: each model's AUC per group
    chart = comparable.copy()
    value, error, title, ylabel = "auc_mean", "auc_std", "Test AUC by sample group", "AUC"
  chart["x"] = chart["group"] + " / " + chart["task"]
  bar_chart(plt, path, chart.rename(columns={"model": "series"}), value, error,
            f"{title} (kappa={kappa:g})", ylabel)


def gate_chart(plt: ModuleType, path: str, gates: pd.DataFrame) -> None:
  """Mean gate weight on own, other tasks' and shared experts, per gated model and task."""
  long = gates.melt(id_vars=["model", "task"], var_name="series", value_name="weight")
  long["x"] = long["model"] + " / " + long["task"]
  bar_chart(plt, path, long, "weight", None,
            "Mean gate weight on own, other tasks' and shared experts (test split)",
            "gate weight")


def difference_chart(plt: ModuleType, path: str, compared: pd.DataFrame) -> None:
  """Reference - baseline test AUC per task, with the seed and bootstrap 95% intervals."""
  rows = compared[(compared["group"] == "all") & (compared["metric"] == "auc")]
  labels = [f"{r.reference} - {r.baseline} / {r.task}" for r in rows.itertuples()]
  fig, ax = plt.subplots(figsize=(8, max(2.5, 0.4 * len(rows) + 1.2)))
  y = np.arange(len(rows))[::-1]
  ax.axvline(0.0, color="grey", linewidth=1)
  for offset, (low, high, name) in zip((0.12, -0.12), (("seed_low", "seed_high", "seed"),
                                                       ("boot_low", "boot_high", "bootstrap"))):
    lo, hi = rows[low].to_numpy(dtype=float), rows[high].to_numpy(dtype=float)
    shown = np.isfinite(lo) & np.isfinite(hi)
    if not shown.any():  # one seed: no seed interval
      continue
    ax.errorbar(rows["diff_mean"].to_numpy(dtype=float)[shown], y[shown] + offset,
                xerr=[(rows["diff_mean"].to_numpy(dtype=float) - lo)[shown],
                      (hi - rows["diff_mean"].to_numpy(dtype=float))[shown]],
                fmt="o", capsize=3, label=f"{name} 95% interval")
  ax.set_yticks(y)
  ax.set_yticklabels(labels)
  ax.set_xlabel("test AUC difference")
  ax.set_title("Reference model against each baseline\n(an interval across 0: within noise)")
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def settings_table(settings: Dict[str, dict]) -> str:
  """Which settings each model ran with: those every model shares, then each model's own."""
  if not settings:
    return ""
  keys = list(dict.fromkeys(k for values in settings.values() for k in values))
  first = next(iter(settings.values()))
  shared = [k for k in keys if all(v.get(k) == first.get(k) for v in settings.values())]
  own = [k for k in keys if k not in shared]
  text = "Settings of every model: " + ", ".join(
      f"{k}={_setting(first.get(k))}" for k in shared) + ".\n"
  if own:
    text += ("\nSettings that differ between models:\n\n| model | " + " | ".join(own)
             + " |\n| --- |" + " --- |" * len(own) + "\n" + "".join(
                 f"| {model} | " + " | ".join(_setting(v.get(k)) for k in own) + " |\n"
                 for model, v in settings.items()))
  return text


def _setting(value) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value) or "(none)"
  return str(value)


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def _mean_std(mean, std) -> str:
  if mean is None or not np.isfinite(mean):
    return "-"
  return f"{mean:.4f} ± {std:.4f}" if std is not None and np.isfinite(std) else f"{mean:.4f}"


def _frame(records: Optional[List[dict]], columns: Optional[List[str]] = None) -> pd.DataFrame:
  """Rows of results.json as a frame; a column of numbers and nulls (JSON's NaN) as floats."""
  frame = pd.DataFrame(records or [], columns=columns)
  for name in frame.columns:
    if frame[name].dtype == object and all(v is None or isinstance(v, (int, float))
                                           for v in frame[name]):
      frame[name] = frame[name].astype(float)
  return frame


def _number(value) -> float:
  return float("nan") if value is None else float(value)


def _page_command(json_path: str, output: str, about: Optional[str]) -> str:
  return (f"{PAGE_COMMAND} --benchmark_json={json_path} --output={output}"
          + (f" --about={about}" if about else ""))


def reproduce_commands(report: dict, json_path: str, output: str,
                       about: Optional[str] = None) -> List[str]:
  """The commands that rebuild the page, on the full release where the data set is known
  (with the release's own settings, so without this study's `about`)."""
  bench, data = report["benchmark"], report["data"]
  models = ",".join(bench["models"])
  page = _page_command(json_path, output, about)
  if "kuairand" in data["name"].lower():
    out = "benchmark/kuairand_pure"
    return ["python main.py prepare --dataset=kuairand --raw=KuaiRand-Pure/data/ "
            "--out=data/kuairand_pure",
            f"python main.py benchmark --model_flags_dir=experiments/kuairand_pure "
            f"--data_dir=data/kuairand_pure --models={models} --seeds={bench['seeds']} "
            f"--output_dir={out}",
            _page_command(f"{out}/results.json", output, None)]  # `about` told this study
  return [f"python main.py benchmark --data_dir={data['data_dir']} --models={models} "
          f"--seeds={bench['seeds']} --output_dir=...", page]


def render(report: dict, json_path: str, output: str, about: Optional[str] = None,
           about_text: str = "") -> str:
  """The page's markdown for `report` (a benchmark's results.json); names its plots.

  `about` is the path of the markdown `about_text` came from (placed under "About this
  study").
  """
  stem = os.path.splitext(os.path.basename(output))[0]
  bench, data = report["benchmark"], report["data"]
  results = _frame(report["results"])
  compared = _frame(report["intervals"], ["group"] + intervals.COLUMNS)
  seeds = sorted({r["seed"] for r in report["runs"]})
  text = [f"# Results: {', '.join(bench['models'])} on {data['name']}\n",
          f"Generated from `{json_path}` by `{_page_command(json_path, output, about)}`; "
          "do not edit by hand.\n"]
  rows = ", ".join(f"{split} {n:,}" for split, n in data["rows"].items() if n is not None)
  text.append(f"Data: `{data['name']}` ({rows} rows; tasks {', '.join(data['tasks'])}). "
              f"Seeds {', '.join(map(str, seeds))} ({bench['seeds']} per model).\n")
  if "slice" in data["name"].lower():
    text.append(f"**These figures come from a slice of the data set (`{data['name']}`), not "
                "the full release: a comparison on it carries the noise of its small test "
                "split, which the intervals below measure.**\n")
  text.append("To reproduce on the full KuaiRand-Pure release:\n" if "kuairand"
              in data["name"].lower() else "To reproduce:\n")
  text.append("```\n" + "\n".join(reproduce_commands(report, json_path, output, about))
              + "\n```\n")
  if about:
    text.append(f"## About this study\n\nFrom `{about}`.\n\n{about_text.strip()}\n")

  text.append("## Test metrics per model and task\n")
  text.append("Mean ± sample std (n - 1) over seeds.\n")
  text.append(_table(["model", "task", "seeds", "test AUC", "test gAUC", "test logloss"], [
      (r.model, r.task, r.seeds, _mean_std(r.auc_mean, r.auc_std),
       _mean_std(r.gauc_mean, r.gauc_std), _mean_std(r.logloss_mean, r.logloss_std))
      for r in results.itertuples()]))
  text.append(f"![test AUC]({stem}_auc.png)\n")
  if report.get("failed"):
    text.append("Failed runs, left out: " + "; ".join(
        f"{f['model']} seed {f['seed']} ({f['failed']})" for f in report["failed"]) + "\n")

  text.append(f"## {bench['reference']} against each baseline\n")
  text.append("Difference of the test metric (reference - baseline), with 95% intervals: "
              "paired by seed (Student t over the seeds' differences; none for one seed) and "
              "a paired bootstrap over test rows (the same resampled rows for both models and "
              f"every seed; {bench['replicates']} replicates). \"within noise\": an interval "
              "contains 0.\n")
  every_row = compared[compared["group"] == "all"]
  text.append(intervals.markdown(every_row) if not every_row.empty
              else "No comparison: one model, or the reference model's runs failed.\n")
  if not every_row.empty:
    text.append(f"![differences]({stem}_differences.png)\n")

  if report.get("comparable"):
    comparable = _frame(report["comparable"])
    first = comparable.iloc[0]
    text.append("## Comparable samples\n")
    text.append(f"Users grouped by the ratio of their feedback on {first.task_a} and "
                f"{first.task_b} in train (kappa = {first.kappa:g}; "
                "stem_tfrs/evaluation/analysis.py). Gap: the model's AUC minus "
                "single_task's, with its 95% intervals.\n")
    text.append(_table(["group", "task", "model", "samples", "test AUC", "gap to single_task",
                        "seed 95% CI", "bootstrap 95% CI", "verdict"], [
        (r.group, r.task, r.model, f"{r.samples:,}", _mean_std(r.auc_mean, r.auc_std),
         "-" if not np.isfinite(_number(r.auc_vs_single_task)) else
         f"{r.auc_vs_single_task:+.4f}",
         intervals.interval_text(_number(r.gap_seed_low), _number(r.gap_seed_high)),
         intervals.interval_text(_number(r.gap_boot_low), _number(r.gap_boot_high)),
         r.gap_verdict or "-") for r in comparable.itertuples()]))
    text.append(f"![comparable samples]({stem}_comparable.png)\n")
    by_group = compared[compared["group"] != "all"]
    if not by_group.empty:
      text.append(f"{bench['reference']} against each baseline, per sample group:\n")
      text.append(_table(["group", "reference - baseline", "task", "difference",
                          "seed 95% CI", "bootstrap 95% CI", "verdict"], [
          (r.group, f"{r.reference} - {r.baseline}", r.task, f"{r.diff_mean:+.4f}",
           intervals.interval_text(_number(r.seed_low), _number(r.seed_high)),
           intervals.interval_text(_number(r.boot_low), _number(r.boot_high)), r.verdict)
          for r in by_group.itertuples()]))

  if report.get("gates"):
    text.append("## Gate weights\n")
    text.append("Mean gate weight each task puts on its own, other tasks' and shared experts "
                "(test split, mean over seeds).\n")
    text.append(_table(["model", "task", "own", "other tasks", "shared"], [
        (g["model"], g["task"], f"{g['own']:.3f}", f"{g['other_tasks']:.3f}",
         f"{g['shared']:.3f}") for g in report["gates"]]))
    text.append(f"![gate weights]({stem}_gates.png)\n")

  if report.get("settings"):
    text.append("## Settings\n")
    text.append(settings_table(report["settings"]))
  return "\n".join(text)


def write_page(json_path: str, output: str, about: Optional[str] = None) -> List[str]:
  """Writes the page and its plots; returns the paths written.

  `about`: a markdown file whose text the page carries under "About this study".

  Raises:
    ValueError: `json_path` is not a benchmark's results.json (names what is missing).
    OSError: it cannot be read.
  """
  with open(json_path) as f:
    try:
      report = json.load(f)
    except ValueError as e:
      raise ValueError(f"{json_path} is not JSON: {e}") from None
  missing = [k for k in ("results", "runs", "benchmark", "data", "intervals") if k not in report]
  if missing:
    raise ValueError(f"{json_path} is not the results.json of a benchmark of this version "
                     f"(no {', '.join(missing)}); run python main.py benchmark again")
  about_text = ""
  if about:
    with open(about, encoding="utf-8") as f:
      about_text = f.read()
  text = render(report, json_path, output, about, about_text)
  directory = os.path.dirname(os.path.abspath(output))
  stem = os.path.splitext(os.path.basename(output))[0]
  plt = plotting(PAGE_COMMAND)
  os.makedirs(directory, exist_ok=True)
  written = []
  results = _frame(report["results"])
  path = os.path.join(directory, f"{stem}_auc.png")
  bar_chart(plt, path, results.rename(columns={"model": "x", "task": "series"}), "auc_mean",
            "auc_std", "Test AUC (mean ± std over seeds)", "AUC")
  written.append(path)
  compared = _frame(report["intervals"], ["group"] + intervals.COLUMNS)
  if not compared[compared["group"] == "all"].empty:
    path = os.path.join(directory, f"{stem}_differences.png")
    difference_chart(plt, path, compared)
    written.append(path)
  if report.get("comparable"):
    path = os.path.join(directory, f"{stem}_comparable.png")
    comparable_chart(plt, path, _frame(report["comparable"]))
    written.append(path)
  if report.get("gates"):
    path = os.path.join(directory, f"{stem}_gates.png")
    gate_chart(plt, path, _frame(report["gates"]))
    written.append(path)
  partial = output + ".partial"
  with open(partial, "w") as f:
    f.write(text)
  os.replace(partial, output)  # never a half-written page
  return [output] + written


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog=PAGE_COMMAND, description=__doc__.split("\n")[0])
  parser.add_argument("--benchmark_json", required=True,
                      help="results.json of a `python main.py benchmark` output directory")
  parser.add_argument("--output", required=True,
                      help="the markdown page to write; its plots go beside it")
  parser.add_argument("--about", default=None,
                      help="a markdown file the page carries under 'About this study' (what "
                           "the study changed from the authors' configuration, and why)")
  args = parser.parse_args(argv)
  try:
    written = write_page(args.benchmark_json, args.output, args.about)
  except (OSError, ValueError, KeyError, MissingExtraError) as e:
    message = e if not isinstance(e, KeyError) else f"{args.benchmark_json} lacks {e}"
    print(f"error: {message}".splitlines()[0], file=sys.stderr)
    return 1
  print("wrote " + ", ".join(written))
  return 0


if __name__ == "__main__":
  sys.exit(main())
